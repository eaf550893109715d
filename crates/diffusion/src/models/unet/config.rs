//! diffusers' `UNet2DConditionModel` config, with diffusers' defaults and its conventions made
//! explicit: per-block lists from scalars, heads from `attention_head_dim` (diffusers' historical
//! misnomer), the up path's reversed lists.

use serde::Deserialize;

use crate::weights::WeightsError;

/// A scalar or one value per block.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    fn expand(&self, blocks: usize, what: &str) -> Result<Vec<usize>, WeightsError> {
        match self {
            PerBlock::One(v) => Ok(vec![*v; blocks]),
            PerBlock::Each(v) if v.len() == blocks => Ok(v.clone()),
            PerBlock::Each(v) => Err(WeightsError::Config(format!(
                "unet config.json: {what} has {} entries for {blocks} blocks",
                v.len()
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    pub only_cross_attention: serde_json::Value,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: PerBlock,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub act_fn: String,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: PerBlock,
    pub transformer_layers_per_block: PerBlock,
    pub reverse_transformer_layers_per_block: Option<Vec<usize>>,
    pub encoder_hid_dim: Option<usize>,
    pub attention_head_dim: PerBlock,
    pub num_attention_heads: Option<PerBlock>,
    pub dual_cross_attention: bool,
    pub use_linear_projection: bool,
    pub class_embed_type: Option<String>,
    pub addition_embed_type: Option<String>,
    pub addition_time_embed_dim: Option<usize>,
    pub num_class_embeds: Option<usize>,
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: String,
    pub time_embedding_type: String,
    pub time_cond_proj_dim: Option<usize>,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    pub projection_class_embeddings_input_dim: Option<usize>,
    pub timestep_post_act: Option<String>,
    pub sample_size: Option<serde_json::Value>,
}

impl Default for UNetConfig {
    fn default() -> Self {
        UNetConfig {
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: [
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: [
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            only_cross_attention: serde_json::Value::Bool(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: "silu".into(),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::One(1280),
            transformer_layers_per_block: PerBlock::One(1),
            reverse_transformer_layers_per_block: None,
            encoder_hid_dim: None,
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            class_embed_type: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            num_class_embeds: None,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            time_embedding_type: "positional".into(),
            time_cond_proj_dim: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            projection_class_embeddings_input_dim: None,
            timestep_post_act: None,
            sample_size: None,
        }
    }
}

/// The block kinds this engine builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Plain,
    CrossAttn,
}

/// Everything the UNet's structure needs, resolved and checked.
#[derive(Debug, Clone)]
pub struct UNetPlan {
    pub in_channels: usize,
    pub out_channels: usize,
    pub channels: Vec<usize>,
    pub down: Vec<BlockKind>,
    pub up: Vec<BlockKind>,
    pub layers_per_block: Vec<usize>,
    pub transformer_layers: Vec<usize>,
    pub reverse_transformer_layers: Vec<usize>,
    pub heads: Vec<usize>,
    pub cross_attention_dim: Vec<usize>,
    pub groups: usize,
    pub eps: f64,
    pub time_embed_dim: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub use_linear_projection: bool,
    pub downsample_padding: usize,
    /// SDXL's `text_time` conditioning: (time-id embedding dim, add_embedding input dim).
    pub text_time: Option<(usize, usize)>,
}

fn unsupported(what: &str) -> WeightsError {
    WeightsError::Config(format!(
        "unet config.json: {what} is not supported by this engine"
    ))
}

impl UNetConfig {
    pub fn from_json(json: &str) -> Result<Self, WeightsError> {
        // A null mid block type is diffusers' "no mid block" (refused by `plan`), not the default.
        crate::weights::parse_config(json, "unet config.json", &["mid_block_type"])
    }

    /// Resolves the config into a plan, refusing what the engine does not build.
    pub fn plan(&self) -> Result<UNetPlan, WeightsError> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(WeightsError::Config(format!(
                "unet config.json: {} down blocks, {} up blocks and {} block_out_channels must agree",
                self.down_block_types.len(),
                self.up_block_types.len(),
                n
            )));
        }
        let kind = |t: &str| match t {
            "DownBlock2D" | "UpBlock2D" => Ok(BlockKind::Plain),
            "CrossAttnDownBlock2D" | "CrossAttnUpBlock2D" => Ok(BlockKind::CrossAttn),
            other => Err(unsupported(&format!("block type {other:?}"))),
        };
        let down = self
            .down_block_types
            .iter()
            .map(|t| kind(t))
            .collect::<Result<Vec<_>, _>>()?;
        let up = self
            .up_block_types
            .iter()
            .map(|t| kind(t))
            .collect::<Result<Vec<_>, _>>()?;
        if self.mid_block_type.as_deref() != Some("UNetMidBlock2DCrossAttn") {
            return Err(unsupported(&format!(
                "mid_block_type {:?}",
                self.mid_block_type
            )));
        }
        if self.only_cross_attention != serde_json::Value::Bool(false) {
            return Err(unsupported("only_cross_attention"));
        }
        if self.dual_cross_attention
            || self.encoder_hid_dim.is_some()
            || self.class_embed_type.is_some()
            || self.num_class_embeds.is_some()
            || self.time_cond_proj_dim.is_some()
            || self.timestep_post_act.is_some()
        {
            return Err(unsupported(
                "class, hid or dual-cross-attention conditioning",
            ));
        }
        if self.resnet_time_scale_shift != "default" || self.time_embedding_type != "positional" {
            return Err(unsupported("a non-default time embedding"));
        }
        if self.act_fn != "silu" || self.conv_in_kernel != 3 || self.conv_out_kernel != 3 {
            return Err(unsupported(
                "act_fn other than silu or conv kernels other than 3",
            ));
        }
        if self.center_input_sample || self.mid_block_scale_factor != 1.0 {
            return Err(unsupported(
                "center_input_sample or a mid block scale factor",
            ));
        }
        let text_time = match self.addition_embed_type.as_deref() {
            None => None,
            Some("text_time") => {
                let dim = self
                    .addition_time_embed_dim
                    .ok_or_else(|| unsupported("text_time without addition_time_embed_dim"))?;
                let input = self.projection_class_embeddings_input_dim.ok_or_else(|| {
                    unsupported("text_time without projection_class_embeddings_input_dim")
                })?;
                Some((dim, input))
            }
            Some(other) => return Err(unsupported(&format!("addition_embed_type {other:?}"))),
        };
        // diffusers: `num_attention_heads = num_attention_heads or attention_head_dim`.
        let heads = match &self.num_attention_heads {
            Some(h) => h.expand(n, "num_attention_heads")?,
            None => self.attention_head_dim.expand(n, "attention_head_dim")?,
        };
        let transformer_layers = self
            .transformer_layers_per_block
            .expand(n, "transformer_layers_per_block")?;
        let reverse_transformer_layers = match &self.reverse_transformer_layers_per_block {
            Some(r) if r.len() == n => r.clone(),
            Some(_) => {
                return Err(unsupported(
                    "reverse_transformer_layers_per_block of the wrong length",
                ));
            }
            None => transformer_layers.iter().rev().copied().collect(),
        };
        let plan = UNetPlan {
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            channels: self.block_out_channels.clone(),
            down,
            up,
            layers_per_block: self.layers_per_block.expand(n, "layers_per_block")?,
            transformer_layers,
            reverse_transformer_layers,
            heads,
            cross_attention_dim: self.cross_attention_dim.expand(n, "cross_attention_dim")?,
            groups: self.norm_num_groups,
            eps: self.norm_eps,
            time_embed_dim: self.block_out_channels[0] * 4,
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            use_linear_projection: self.use_linear_projection,
            downsample_padding: self.downsample_padding,
            text_time,
        };
        // As diffusers: a block's attention has `heads` heads of `channels / heads` (rounded
        // down), its inner width their product, which may be less than the channels.
        for (i, (&c, &h)) in plan.channels.iter().zip(&plan.heads).enumerate() {
            if h == 0 || h > c {
                return Err(WeightsError::Config(format!(
                    "unet config.json: block {i} has {c} channels, too few for {h} heads"
                )));
            }
        }
        Ok(plan)
    }
}
