//! Decoding images the way the original pipeline does (OpenCV `IMREAD_COLOR`): 3-channel BGR
//! uint8, EXIF orientation applied, grayscale replicated, alpha dropped, 16-bit → 8-bit by
//! `>> 8`. Corrupt or oversized files are errors, never panics.

use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::error::{Error, Result};

/// An interleaved BGR uint8 image (OpenCV's layout).
#[derive(Clone, Debug, PartialEq)]
pub struct BgrImage {
    pub width: usize,
    pub height: usize,
    /// `height * width * 3` bytes, row-major, B, G, R.
    pub data: Vec<u8>,
}

impl BgrImage {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 || data.len() != width * height * 3 {
            return Err(Error::Other(format!(
                "a {width}x{height} BGR image needs {} bytes, got {}",
                width * height * 3,
                data.len()
            )));
        }
        Ok(BgrImage { width, height, data })
    }

    /// From an RGB image of the `image` crate.
    pub fn from_rgb(img: &image::RgbImage) -> Self {
        let mut data = img.as_raw().clone();
        for px in data.chunks_exact_mut(3) {
            px.swap(0, 2);
        }
        BgrImage { width: img.width() as usize, height: img.height() as usize, data }
    }

    /// To an RGB image of the `image` crate (for drawing and saving).
    pub fn to_rgb(&self) -> image::RgbImage {
        let mut data = self.data.clone();
        for px in data.chunks_exact_mut(3) {
            px.swap(0, 2);
        }
        image::RgbImage::from_raw(self.width as u32, self.height as u32, data).expect("consistent size")
    }
}

/// Largest accepted image, in pixels (a 200-megapixel image still decodes).
const MAX_PIXELS: u64 = 200_000_000;

/// Reads an image file as BGR. A truncated JPEG decodes (its missing part grey, as with
/// OpenCV) with a warning on stderr.
pub fn read_image(path: &Path) -> Result<BgrImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::Image { path: path.to_path_buf(), reason: e.to_string() })?;
    let img = decode_image(&bytes).map_err(|reason| Error::Image { path: path.to_path_buf(), reason })?;
    if jpeg_is_truncated(&bytes) {
        eprintln!("warning: {}: premature end of JPEG data (truncated file); the missing part is grey", path.display());
    }
    Ok(img)
}

/// Whether JPEG data ends before its end-of-image marker (libjpeg's "Premature end of JPEG
/// file"): no `FF D9` after the last start-of-scan. Inside entropy-coded data `FF` is always
/// followed by `00` or a restart marker, so an `FF D9` there is the real end; thumbnails'
/// markers come before the main image's scans.
pub fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let Some(sos) = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) else { return true };
    !bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Decodes an in-memory encoded image (JPEG, PNG, BMP, TIFF, WebP).
pub fn decode_image(bytes: &[u8]) -> std::result::Result<BgrImage, String> {
    let format = image::guess_format(bytes).map_err(|_| "not a recognised image format".to_string())?;
    let mut img = if format == ImageFormat::Jpeg { decode_jpeg(bytes)? } else { decode_other(bytes, format)? };
    img.apply_orientation(orientation(bytes, format));
    Ok(to_bgr(img))
}

/// Width and height of an image file as [`read_image`] would return it (EXIF orientation
/// applied), reading only the header.
pub fn image_size(path: &Path) -> Result<(usize, usize)> {
    let err = |reason: String| Error::Image { path: path.to_path_buf(), reason };
    let reader = ImageReader::open(path)
        .map_err(|e| err(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    let mut decoder = reader.into_decoder().map_err(|e| err(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    let rotated = matches!(
        decoder.orientation().unwrap_or(Orientation::NoTransforms),
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    );
    Ok(if rotated { (h as usize, w as usize) } else { (w as usize, h as usize) })
}

fn check_size(w: u64, h: u64) -> std::result::Result<(), String> {
    if w * h > MAX_PIXELS {
        return Err(format!("{w}x{h} is larger than the {MAX_PIXELS}-pixel limit"));
    }
    Ok(())
}

/// JPEG through libjpeg(-turbo) code, like OpenCV: integer IDCT and fancy upsampling give
/// the same pixels as `cv2.imread` (other decoders differ by a few levels).
fn decode_jpeg(bytes: &[u8]) -> std::result::Result<DynamicImage, String> {
    // libjpeg reports fatal errors by unwinding out of its callbacks; contain them here.
    std::panic::catch_unwind(|| decode_jpeg_unguarded(bytes)).unwrap_or_else(|payload| {
        // The payload is libjpeg's own message ("libjpeg fatal error: ..."): pass it on.
        let why = payload.downcast_ref::<String>().map_or("corrupt or truncated JPEG data", String::as_str);
        Err(format!("corrupt JPEG ({why})"))
    })
}

fn decode_jpeg_unguarded(bytes: &[u8]) -> std::result::Result<DynamicImage, String> {
    let err = |e: std::io::Error| format!("corrupt JPEG: {e}");
    let d = mozjpeg::Decompress::new_mem(bytes).map_err(err)?;
    let (w, h) = (d.width(), d.height());
    check_size(w as u64, h as u64)?;
    if matches!(d.color_space(), mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK) {
        // libjpeg cannot convert CMYK to RGB; OpenCV asks for CMYK and converts itself.
        let mut started = d.to_colorspace(mozjpeg::ColorSpace::JCS_CMYK).map_err(err)?;
        let cmyk: Vec<u8> = started.read_scanlines().map_err(err)?;
        started.finish().map_err(err)?;
        let rgb = image::RgbImage::from_raw(w as u32, h as u32, cmyk_to_rgb(&cmyk)).ok_or("truncated JPEG data")?;
        return Ok(DynamicImage::ImageRgb8(rgb));
    }
    let mut started = d.rgb().map_err(err)?;
    let data: Vec<u8> = started.read_scanlines().map_err(err)?;
    started.finish().map_err(err)?;
    let rgb = image::RgbImage::from_raw(w as u32, h as u32, data).ok_or("truncated JPEG data")?;
    Ok(DynamicImage::ImageRgb8(rgb))
}

/// OpenCV's `icvCvt_CMYK2BGR_8u_C4C3R` on libjpeg's (Adobe-inverted) CMYK samples, as RGB.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let channel = |v: u8, k: i32| (k - (((255 - v as i32) * k) >> 8)) as u8;
    cmyk.chunks_exact(4)
        .flat_map(|p| {
            let k = p[3] as i32;
            [channel(p[0], k), channel(p[1], k), channel(p[2], k)]
        })
        .collect()
}

fn decode_other(bytes: &[u8], format: ImageFormat) -> std::result::Result<DynamicImage, String> {
    let decoder =
        ImageReader::with_format(std::io::Cursor::new(bytes), format).into_decoder().map_err(|e| e.to_string())?;
    let (w, h) = decoder.dimensions();
    check_size(w as u64, h as u64)?;
    DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())
}

/// EXIF orientation (identity when absent or unreadable).
fn orientation(bytes: &[u8], format: ImageFormat) -> Orientation {
    ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_decoder()
        .ok()
        .and_then(|mut d| d.orientation().ok())
        .unwrap_or(Orientation::NoTransforms)
}

fn to_bgr(img: DynamicImage) -> BgrImage {
    let sixteen_bit = matches!(
        img,
        DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
            | DynamicImage::ImageRgb16(_)
            | DynamicImage::ImageRgba16(_)
    );
    let rgb = if sixteen_bit {
        // OpenCV keeps the high byte.
        let wide = img.into_rgb16();
        let (w, h) = wide.dimensions();
        let narrow: Vec<u8> = wide.as_raw().iter().map(|v| (v >> 8) as u8).collect();
        image::RgbImage::from_raw(w, h, narrow).expect("consistent size")
    } else {
        img.into_rgb8()
    };
    BgrImage::from_rgb(&rgb)
}

/// Writes a 16-bit grey PNG (an instance-id map) atomically to a new file (an existing file
/// at `path` is an error, never replaced).
pub fn write_png_u16(path: &Path, width: usize, height: usize, data: Vec<u16>) -> Result<()> {
    let err = |reason: String| Error::Image { path: path.to_path_buf(), reason };
    let img = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(width as u32, height as u32, data)
        .ok_or_else(|| err("the id map does not have width × height pixels".into()))?;
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png).map_err(|e| err(e.to_string()))?;
    crate::files::write_new_atomically(path, &bytes)
}

/// Writes a BGR image as PNG (lossless, so a reader gets the same pixels back), atomically.
pub fn write_png(path: &Path, img: &BgrImage) -> Result<()> {
    let mut bytes = Vec::new();
    img.to_rgb()
        .write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
        .map_err(|e| Error::Image { path: path.to_path_buf(), reason: e.to_string() })?;
    crate::files::write_atomically(path, &bytes)
}
