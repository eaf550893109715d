//! Prompts to the UNet's conditioning, as diffusers' `encode_prompt` computes it.
//!
//! - **SD 1.x/2.x** (one encoder): the prompt's last hidden state (after the final LayerNorm); with
//!   `clip_skip = k > 0`, the output of the layer `k` before the last, passed through the final
//!   LayerNorm. The negative prompt (`""` when absent) always takes the last hidden state.
//! - **SDXL** (two encoders): each encoder's penultimate hidden state (`hidden_states[-2]`, not
//!   normed; `hidden_states[-(k + 2)]` with `clip_skip = k`), concatenated on the feature axis;
//!   the pooled embedding is the second encoder's projected end-of-text output. The negative
//!   prompt: zeros of the same shapes when it is absent and the model's `model_index.json` has
//!   `force_zeros_for_empty_prompt` (SDXL's do), else encoded like a prompt (`""` included) but
//!   always at `hidden_states[-2]`.
//!
//! Every prompt is one 77-token window: `[bos] + first 75 ids + [eos] + padding`, each tokenizer
//! padding with its own token (`tokenizer_2` of SDXL pads with `!`).

use burn::tensor::{Device, Tensor};

use super::PipelineError;
use crate::models::clip::ClipTextModel;
use crate::tokenizer::{CLIP_CONTEXT_LENGTH, ClipTokenizer};

/// One encoder and the tokenizer that feeds it.
pub struct TextEncoder {
    pub tokenizer: ClipTokenizer,
    pub model: ClipTextModel,
}

impl TextEncoder {
    fn ids(&self, text: &str) -> Vec<Vec<i64>> {
        vec![
            self.tokenizer
                .encode_padded(text, CLIP_CONTEXT_LENGTH)
                .into_iter()
                .map(i64::from)
                .collect(),
        ]
    }
}

/// The conditioning of one prompt: `[1, 77, dim]` embeddings and, for SDXL, `[1, proj]` pooled.
#[derive(Clone)]
pub struct Conditioning {
    pub embeds: Tensor<3>,
    pub pooled: Option<Tensor<2>>,
}

/// The text side of a pipeline: one encoder (SD) or two (SDXL).
pub struct TextEncoders {
    pub first: TextEncoder,
    pub second: Option<TextEncoder>,
    /// `force_zeros_for_empty_prompt` of the model index.
    pub force_zeros_for_empty_prompt: bool,
}

impl TextEncoders {
    pub fn is_sdxl(&self) -> bool {
        self.second.is_some()
    }

    /// The prompt's conditioning. `clip_skip` as diffusers' (`None`/0: the default layer).
    pub fn encode_prompt(
        &self,
        prompt: &str,
        clip_skip: usize,
        device: &Device,
    ) -> Result<Conditioning, PipelineError> {
        match &self.second {
            None => {
                let out = self.first.model.forward(&self.first.ids(prompt), device)?;
                let embeds = if clip_skip == 0 {
                    out.last_hidden_state
                } else {
                    let h = pick(&out.hidden_states, clip_skip + 1)?;
                    self.first.model.final_layer_norm(h)
                };
                Ok(Conditioning {
                    embeds,
                    pooled: None,
                })
            }
            Some(second) => self.encode_sdxl(second, prompt, clip_skip + 2, device),
        }
    }

    /// The negative prompt's conditioning, `None` meaning no negative prompt at all (diffusers'
    /// `negative_prompt=None`), which differs from `Some("")` on SDXL.
    pub fn encode_negative(
        &self,
        negative: Option<&str>,
        like: &Conditioning,
        device: &Device,
    ) -> Result<Conditioning, PipelineError> {
        match &self.second {
            None => {
                let ids = self.first.ids(negative.unwrap_or(""));
                let out = self.first.model.forward(&ids, device)?;
                Ok(Conditioning {
                    embeds: out.last_hidden_state,
                    pooled: None,
                })
            }
            Some(_) if negative.is_none() && self.force_zeros_for_empty_prompt => {
                Ok(Conditioning {
                    embeds: like.embeds.zeros_like(),
                    pooled: like.pooled.as_ref().map(Tensor::zeros_like),
                })
            }
            Some(second) => self.encode_sdxl(second, negative.unwrap_or(""), 2, device),
        }
    }

    /// `hidden_states[-from_end]` of both encoders, concatenated; pooled from the second.
    fn encode_sdxl(
        &self,
        second: &TextEncoder,
        text: &str,
        from_end: usize,
        device: &Device,
    ) -> Result<Conditioning, PipelineError> {
        let one = self.first.model.forward(&self.first.ids(text), device)?;
        let two = second.model.forward(&second.ids(text), device)?;
        let embeds = Tensor::cat(
            vec![
                pick(&one.hidden_states, from_end)?,
                pick(&two.hidden_states, from_end)?,
            ],
            2,
        );
        Ok(Conditioning {
            embeds,
            pooled: Some(two.pooled),
        })
    }
}

/// `hidden_states[-from_end]`.
fn pick(hidden_states: &[Tensor<3>], from_end: usize) -> Result<Tensor<3>, PipelineError> {
    hidden_states
        .len()
        .checked_sub(from_end)
        .map(|i| hidden_states[i].clone())
        .ok_or_else(|| {
            PipelineError::input(
                "clip_skip",
                format!(
                    "the text encoder has {} layers: clip_skip must be below {}",
                    hidden_states.len() - 1,
                    hidden_states.len().saturating_sub(2)
                ),
            )
        })
}
