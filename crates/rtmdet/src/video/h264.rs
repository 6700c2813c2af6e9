//! H.264 NAL unit framing: MP4 stores each unit behind its length ("AVCC"), decoders and
//! encoders speak start codes ("Annex B"). Malformed lengths are errors, never panics.

/// `nal_unit_type` of a NAL unit (its first byte's low five bits).
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

pub const NAL_IDR: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Appends `nal` with a start code.
pub fn push_annexb(nal: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&START_CODE);
    out.extend_from_slice(nal);
}

/// Appends an MP4 sample's length-prefixed NAL units (`length_size` 1, 2 or 4 bytes) to `out`
/// as Annex B.
pub fn avcc_to_annexb(sample: &[u8], length_size: usize, out: &mut Vec<u8>) -> Result<(), String> {
    let mut rest = sample;
    while !rest.is_empty() {
        if rest.len() < length_size {
            return Err(format!("{} stray bytes after the last NAL unit", rest.len()));
        }
        let (len, tail) = rest.split_at(length_size);
        let n = len.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if n > tail.len() {
            return Err(format!("a NAL unit of {n} bytes in a sample with {} left", tail.len()));
        }
        push_annexb(&tail[..n], out);
        rest = &tail[n..];
    }
    Ok(())
}

/// The NAL units of an Annex B stream (3- or 4-byte start codes), without their start codes.
pub fn annexb_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new(); // (start of the start code, start of the unit)
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            let code_start = if i > 0 && stream[i - 1] == 0 { i - 1 } else { i };
            starts.push((code_start, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &(_, unit))| {
            let end = starts.get(k + 1).map_or(stream.len(), |&(next, _)| next);
            &stream[unit..end]
        })
        .filter(|u| !u.is_empty())
        .collect()
}

/// Appends `nal` behind its 4-byte big-endian length (MP4's sample format).
pub fn push_avcc(nal: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
    out.extend_from_slice(nal);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_between_framings() {
        let units: [&[u8]; 3] = [&[0x67, 1, 2, 3], &[0x68, 4], &[0x65, 0, 0, 2, 9]];
        let mut avcc = Vec::new();
        for u in units {
            push_avcc(u, &mut avcc);
        }
        let mut annexb = Vec::new();
        avcc_to_annexb(&avcc, 4, &mut annexb).unwrap();
        assert_eq!(annexb_units(&annexb), units);
        assert_eq!(units.map(nal_type), [NAL_SPS, NAL_PPS, NAL_IDR]);
    }

    #[test]
    fn three_byte_start_codes_and_two_byte_lengths() {
        assert_eq!(annexb_units(&[0, 0, 1, 0x41, 7, 0, 0, 1, 0x41, 8]), [&[0x41, 7][..], &[0x41, 8][..]]);
        let mut out = Vec::new();
        avcc_to_annexb(&[0, 2, 0x41, 7], 2, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x41, 7]);
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut out = Vec::new();
        assert!(avcc_to_annexb(&[0, 0, 0, 9, 1, 2], 4, &mut out).unwrap_err().contains("9 bytes"));
        assert!(avcc_to_annexb(&[0, 0, 0, 1, 5, 0, 0], 4, &mut out).unwrap_err().contains("stray"));
    }
}
