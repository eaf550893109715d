//! CLIP text encoders, as transformers' `CLIPTextModel` (SD 1.x's CLIP-L, SDXL's first encoder)
//! and `CLIPTextModelWithProjection` (SDXL's OpenCLIP bigG), built from their `config.json`.
//!
//! Outputs what the pipelines use: the last hidden state (after the final layer norm), every
//! layer's hidden state (SDXL takes `hidden_states[-2]`, `clip_skip` earlier ones), and the pooled
//! output at the end-of-text token, projected when the model has a projection.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Deserialize;

use crate::nn::{Activation, Embedding, LayerNorm, Linear};
use crate::weights::{WeightsError, store::Weights};

/// transformers' `CLIPTextConfig`, with its defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub projection_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub eos_token_id: i64,
    pub architectures: Vec<String>,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: 2,
            architectures: Vec::new(),
        }
    }
}

impl ClipTextConfig {
    pub fn from_json(json: &str) -> Result<Self, WeightsError> {
        let c: ClipTextConfig =
            crate::weights::parse_config(json, "text encoder config.json", &[])?;
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(WeightsError::Config(format!(
                "text encoder config.json: hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden_size, c.num_attention_heads
            )));
        }
        Ok(c)
    }

    /// `CLIPTextModelWithProjection` has a `text_projection`.
    pub fn with_projection(&self) -> bool {
        self.architectures
            .iter()
            .any(|a| a == "CLIPTextModelWithProjection")
    }
}

struct EncoderLayer {
    layer_norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// What one forward pass gives.
pub struct ClipTextOutput {
    /// `[batch, tokens, hidden]`, after the final layer norm.
    pub last_hidden_state: Tensor<3>,
    /// `hidden_states[0]` is the embeddings, `hidden_states[i]` the output of layer `i`, none of
    /// them normed (as transformers returns them with `output_hidden_states=True`).
    pub hidden_states: Vec<Tensor<3>>,
    /// `[batch, hidden]` at the end-of-text token; `[batch, projection_dim]` with a projection
    /// (transformers' `pooler_output` / `text_embeds`).
    pub pooled: Tensor<2>,
}

pub struct ClipTextModel {
    pub config: ClipTextConfig,
    token_embedding: Embedding,
    position_embedding: Tensor<2>,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    activation: Activation,
    text_projection: Option<Linear>,
}

/// Buffers some CLIP checkpoints carry that the model does not need.
pub const IGNORABLE: [&str; 1] = ["embeddings.position_ids"];

impl ClipTextModel {
    /// Builds the model from its config, taking every tensor by its transformers name.
    pub fn load(config: ClipTextConfig, w: &mut Weights) -> Result<Self, WeightsError> {
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        // transformers 4 saved `CLIPTextModel` under `text_model.`; transformers 5 saves it bare.
        let p = if w.contains("text_model.embeddings.token_embedding.weight") {
            "text_model."
        } else {
            ""
        };
        let token_embedding = Embedding::load(
            w,
            &format!("{p}embeddings.token_embedding"),
            config.vocab_size,
            h,
        )?;
        let position_embedding = w.take::<2>(
            &format!("{p}embeddings.position_embedding.weight"),
            [config.max_position_embeddings, h],
        )?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = format!("{p}encoder.layers.{i}");
            layers.push(EncoderLayer {
                layer_norm1: LayerNorm::load(w, &format!("{l}.layer_norm1"), h, eps)?,
                q: Linear::load(w, &format!("{l}.self_attn.q_proj"), h, h, true)?,
                k: Linear::load(w, &format!("{l}.self_attn.k_proj"), h, h, true)?,
                v: Linear::load(w, &format!("{l}.self_attn.v_proj"), h, h, true)?,
                out: Linear::load(w, &format!("{l}.self_attn.out_proj"), h, h, true)?,
                layer_norm2: LayerNorm::load(w, &format!("{l}.layer_norm2"), h, eps)?,
                fc1: Linear::load(
                    w,
                    &format!("{l}.mlp.fc1"),
                    h,
                    config.intermediate_size,
                    true,
                )?,
                fc2: Linear::load(
                    w,
                    &format!("{l}.mlp.fc2"),
                    config.intermediate_size,
                    h,
                    true,
                )?,
            });
        }
        let final_layer_norm = LayerNorm::load(w, &format!("{p}final_layer_norm"), h, eps)?;
        let text_projection = if config.with_projection() {
            Some(Linear::load(
                w,
                "text_projection",
                h,
                config.projection_dim,
                false,
            )?)
        } else {
            None
        };
        let activation = Activation::parse(&config.hidden_act)?;
        Ok(ClipTextModel {
            config,
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            activation,
            text_projection,
        })
    }

    /// Runs the encoder on token ids (`[batch][tokens]`, every row the same length, at most
    /// `max_position_embeddings`).
    pub fn forward(
        &self,
        ids: &[Vec<i64>],
        device: &Device,
    ) -> Result<ClipTextOutput, WeightsError> {
        let batch = ids.len();
        let len = ids.first().map_or(0, Vec::len);
        if batch == 0 || len == 0 || ids.iter().any(|r| r.len() != len) {
            return Err(WeightsError::Config(
                "token ids must be a non-empty rectangle".into(),
            ));
        }
        if len > self.config.max_position_embeddings {
            return Err(WeightsError::Config(format!(
                "{len} tokens, but the text encoder takes at most {}",
                self.config.max_position_embeddings
            )));
        }
        if let Some(bad) = ids
            .iter()
            .flatten()
            .find(|&&t| t < 0 || t as usize >= self.config.vocab_size)
        {
            return Err(WeightsError::Config(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        let flat: Vec<i32> = ids.iter().flatten().map(|&t| t as i32).collect();
        let id_tensor = Tensor::<2, Int>::from_data(TensorData::new(flat, [batch, len]), device);

        let h = self.config.hidden_size;
        let positions = self
            .position_embedding
            .clone()
            .narrow(0, 0, len)
            .reshape([1, len, h]);
        let mut x = self.token_embedding.forward(id_tensor) + positions;
        let mut hidden_states = vec![x.clone()];
        for layer in &self.layers {
            x = self.layer_forward(layer, x);
            hidden_states.push(x.clone());
        }
        let last_hidden_state = self.final_layer_norm.forward(x);

        // The end-of-text position: the highest id (legacy configs, eos_token_id == 2), else the
        // first occurrence of eos_token_id — as transformers picks it.
        let eos = self.config.eos_token_id;
        let positions = ids.iter().map(|row| {
            if eos == 2 {
                // The first of the maxima, as argmax returns it.
                row.iter()
                    .enumerate()
                    .max_by_key(|(i, t)| (**t, std::cmp::Reverse(*i)))
                    .map_or(0, |(i, _)| i)
            } else {
                row.iter().position(|&t| t == eos).unwrap_or(0)
            }
        });
        let pooled: Vec<Tensor<2>> = positions
            .enumerate()
            .map(|(b, p)| {
                last_hidden_state
                    .clone()
                    .narrow(0, b, 1)
                    .narrow(1, p, 1)
                    .reshape([1, h])
            })
            .collect();
        let pooled = Tensor::cat(pooled, 0);
        let pooled = match &self.text_projection {
            Some(proj) => proj.forward(pooled),
            None => pooled,
        };
        Ok(ClipTextOutput {
            last_hidden_state,
            hidden_states,
            pooled,
        })
    }

    /// The encoder's final LayerNorm, for `clip_skip` on SD 1.x/2.x: diffusers norms the earlier
    /// layer's hidden state it takes (SDXL takes hidden states un-normed).
    pub fn final_layer_norm(&self, x: Tensor<3>) -> Tensor<3> {
        self.final_layer_norm.forward(x)
    }

    fn layer_forward(&self, l: &EncoderLayer, x: Tensor<3>) -> Tensor<3> {
        let [b, n, h] = x.dims();
        let heads = self.config.num_attention_heads;
        let d = h / heads;
        let y = l.layer_norm1.forward(x.clone());
        let split = |t: Tensor<3>| t.reshape([b, n, heads, d]).swap_dims(1, 2);
        let q = split(l.q.forward(y.clone()));
        let k = split(l.k.forward(y.clone()));
        let v = split(l.v.forward(y));
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: true,
        };
        let a = attention(q, k, v, None, None, options)
            .swap_dims(1, 2)
            .reshape([b, n, h]);
        let x = x + l.out.forward(a);
        let y = l.layer_norm2.forward(x.clone());
        x + l.fc2.forward(self.activation.forward(l.fc1.forward(y)))
    }
}
