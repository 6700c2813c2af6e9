//! Recognises which member of the family a set of weights belongs to, from tensor names and
//! shapes alone, so a user never has to say `--model` for a checkpoint.

use super::TensorMap;
use crate::config::{ModelConfig, Size};
use crate::error::{Error, Result};

fn shape<'a>(map: &'a TensorMap, name: &str) -> Option<&'a [usize]> {
    map.get(name).map(|t| t.shape.as_slice())
}

fn required<'a>(map: &'a TensorMap, name: &str) -> Result<&'a [usize]> {
    shape(map, name).ok_or_else(|| Error::MissingTensor { name: name.to_string() })
}

/// Infers the configuration of the detector stored in `map`. `hint` restricts the size
/// (an error names what does not fit); `exp_on_reg` overrides the size default.
pub fn recognise(map: &TensorMap, hint: Option<Size>, exp_on_reg: Option<bool>) -> Result<ModelConfig> {
    let depthwise = map.contains_key("backbone.stage1.0.depthwise_conv.conv.weight");
    let stage4 =
        if depthwise { "backbone.stage4.0.pointwise_conv.conv.weight" } else { "backbone.stage4.0.conv.weight" };
    let c5 = *required(map, stage4)?.first().ok_or_else(|| Error::ShapeMismatch {
        name: stage4.into(),
        expected: vec![0, 0, 0, 0],
        found: vec![],
    })?;
    let stage2_blocks = (0..)
        .take_while(|j| map.contains_key(&format!("backbone.stage2.1.blocks.{j}.conv2.pointwise_conv.conv.weight")))
        .count();
    let cls = required(map, "bbox_head.rtm_cls.0.weight")?;
    let (num_classes, feat) = match cls {
        [n, c, 1, 1] => (*n, *c),
        other => {
            return Err(Error::ShapeMismatch {
                name: "bbox_head.rtm_cls.0.weight".into(),
                expected: vec![0, 0, 1, 1],
                found: other.to_vec(),
            });
        }
    };

    let candidates: Vec<Size> = match hint {
        Some(h) => vec![h],
        None => Size::ALL.to_vec(),
    };
    let fits = |s: &Size| {
        let c = ModelConfig::new(*s);
        c.use_depthwise == depthwise && c.widen(1024) == c5 && c.deepen(6) == stage2_blocks
    };
    let size = candidates.into_iter().find(fits).ok_or_else(|| {
        Error::Config(format!(
            "the weights (stage4 width {c5}, {stage2_blocks} stage2 blocks, depthwise {depthwise}) match {}",
            match hint {
                Some(h) => format!("no RTMDet-{} model", h.name()),
                None => "no known RTMDet size".to_string(),
            }
        ))
    })?;

    let mut cfg = if map.contains_key("bbox_head.rtm_ang.0.weight") {
        ModelConfig::rotated(size)
    } else if map.contains_key("bbox_head.rtm_kernel.0.weight") {
        ModelConfig::ins(size)
    } else {
        ModelConfig::new(size)
    };
    cfg = cfg.with_num_classes(num_classes);
    cfg.neck_channels = feat;
    cfg.share_conv = !depthwise && towers_are_shared(map);
    if let Some(e) = exp_on_reg {
        cfg.exp_on_reg = e;
    }
    Ok(cfg)
}

/// True when level 1's tower conv equals level 0's (PyTorch repeats shared weights).
fn towers_are_shared(map: &TensorMap) -> bool {
    match (map.get("bbox_head.cls_convs.0.0.conv.weight"), map.get("bbox_head.cls_convs.1.0.conv.weight")) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}
