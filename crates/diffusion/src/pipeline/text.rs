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

use burn::tensor::{Device, Tensor, TensorData};

use super::PipelineError;
use super::prompt::{Fragment, chunks, parse};
use crate::models::clip::{ClipTextModel, ClipTextOutput};
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

/// Which hidden state a prompt takes from an encoder's output.
#[derive(Clone, Copy)]
enum Layer {
    /// The final LayerNorm's output (SD's default).
    Last,
    /// `final_layer_norm(hidden_states[-k])` (SD with clip_skip).
    NormedFromEnd(usize),
    /// `hidden_states[-k]` as it is (SDXL).
    FromEnd(usize),
}

impl TextEncoder {
    fn select(&self, out: &ClipTextOutput, layer: Layer) -> Result<Tensor<3>, PipelineError> {
        Ok(match layer {
            Layer::Last => out.last_hidden_state.clone(),
            Layer::NormedFromEnd(k) => self.model.final_layer_norm(pick(&out.hidden_states, k)?),
            Layer::FromEnd(k) => pick(&out.hidden_states, k)?,
        })
    }

    /// Weighted fragments through this encoder: `[1, 77·chunks, dim]` with each token's embedding
    /// scaled by its weight and each chunk rescaled to its unweighted mean, plus the first
    /// chunk's pooled output. At least `min_chunks` chunks (empty ones added).
    fn encode_weighted(
        &self,
        fragments: &[Fragment],
        layer: Layer,
        min_chunks: usize,
        device: &Device,
    ) -> Result<(Tensor<3>, Tensor<2>), PipelineError> {
        let per_chunk = CLIP_CONTEXT_LENGTH - 2;
        let mut cs = chunks(
            fragments
                .iter()
                .map(|f| (self.tokenizer.encode(&f.text), f.weight, f.break_before)),
            per_chunk,
        );
        while cs.len() < min_chunks {
            cs.push(Vec::new());
        }
        let (bos, eos, pad) = (
            self.tokenizer.bos_id(),
            self.tokenizer.eos_id(),
            self.tokenizer.pad_id(),
        );
        let mut ids = Vec::with_capacity(cs.len());
        let mut weights = Vec::with_capacity(cs.len() * CLIP_CONTEXT_LENGTH);
        for c in &cs {
            let mut row = vec![i64::from(bos)];
            weights.push(1.0);
            for &(id, w) in c {
                row.push(i64::from(id));
                weights.push(w);
            }
            row.push(i64::from(eos));
            weights.push(1.0);
            while row.len() < CLIP_CONTEXT_LENGTH {
                row.push(i64::from(pad));
                weights.push(1.0);
            }
            ids.push(row);
        }
        let k = cs.len();
        let out = self.model.forward(&ids, device)?;
        let z = self.select(&out, layer)?;
        let [_, n, d] = z.dims();
        let w = Tensor::<3>::from_data(TensorData::new(weights, [k, n, 1]), device).cast(z.dtype());
        let mean = |t: &Tensor<3>| t.clone().mean_dim(2).mean_dim(1);
        let original = mean(&z);
        let weighted = z * w;
        let scaled = weighted.clone() * (original / mean(&weighted));
        let pooled = out.pooled.narrow(0, 0, 1);
        Ok((scaled.reshape([1, k * n, d]), pooled))
    }
}

impl TextEncoders {
    /// The prompt with weighting syntax (`(text:1.3)`, `(text)`, `[text]`, `BREAK`) and no
    /// length limit (see [`super::prompt`]); at least `min_chunks` 77-token chunks.
    pub fn encode_prompt_weighted(
        &self,
        prompt: &str,
        clip_skip: usize,
        min_chunks: usize,
        device: &Device,
    ) -> Result<Conditioning, PipelineError> {
        let fragments = parse(prompt);
        match &self.second {
            None => {
                let layer = if clip_skip == 0 {
                    Layer::Last
                } else {
                    Layer::NormedFromEnd(clip_skip + 1)
                };
                let (embeds, _) = self
                    .first
                    .encode_weighted(&fragments, layer, min_chunks, device)?;
                Ok(Conditioning {
                    embeds,
                    pooled: None,
                })
            }
            Some(second) => self.weighted_sdxl(
                second,
                &fragments,
                Layer::FromEnd(clip_skip + 2),
                min_chunks,
                device,
            ),
        }
    }

    /// The negative prompt, weighted, with as many chunks as `like` (the positive prompt's
    /// conditioning) or more; `None` follows [`TextEncoders::encode_negative`]'s rules.
    pub fn encode_negative_weighted(
        &self,
        negative: Option<&str>,
        like: &Conditioning,
        device: &Device,
    ) -> Result<Conditioning, PipelineError> {
        let chunks = like.embeds.dims()[1] / CLIP_CONTEXT_LENGTH;
        let fragments = parse(negative.unwrap_or(""));
        match &self.second {
            None => {
                let (embeds, _) =
                    self.first
                        .encode_weighted(&fragments, Layer::Last, chunks, device)?;
                Ok(Conditioning {
                    embeds,
                    pooled: None,
                })
            }
            Some(_) if negative.is_none() && self.force_zeros_for_empty_prompt => {
                Ok(Conditioning {
                    embeds: like.embeds.zeros_like(),
                    pooled: like.pooled.as_ref().map(Tensor::zeros_like),
                })
            }
            Some(second) => {
                self.weighted_sdxl(second, &fragments, Layer::FromEnd(2), chunks, device)
            }
        }
    }

    fn weighted_sdxl(
        &self,
        second: &TextEncoder,
        fragments: &[Fragment],
        layer: Layer,
        min_chunks: usize,
        device: &Device,
    ) -> Result<Conditioning, PipelineError> {
        // Both encoders share CLIP's vocabulary, but their special tokens can differ (`!` is
        // tokenizer_2's pad): the larger chunk count wins, so the two sequences line up.
        let (a, _) = self
            .first
            .encode_weighted(fragments, layer, min_chunks, device)?;
        let (b, pooled) = second.encode_weighted(fragments, layer, min_chunks, device)?;
        let (na, nb) = (a.dims()[1], b.dims()[1]);
        let (a, b, pooled) = if na == nb {
            (a, b, pooled)
        } else {
            let k = na.max(nb) / CLIP_CONTEXT_LENGTH;
            let (a, _) = self.first.encode_weighted(fragments, layer, k, device)?;
            let (b, pooled) = second.encode_weighted(fragments, layer, k, device)?;
            (a, b, pooled)
        };
        Ok(Conditioning {
            embeds: Tensor::cat(vec![a, b], 2),
            pooled: Some(pooled),
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
                    "skips more layers than the text encoder has ({} layers)",
                    hidden_states.len().saturating_sub(1)
                ),
            )
        })
}
