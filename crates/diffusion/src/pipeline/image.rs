//! Images in and out, as diffusers' `VaeImageProcessor` treats them.
//!
//! - Input images become RGB (alpha dropped, grey replicated — PIL's `convert("RGB")`), are resized
//!   to the generation size when they differ (Lanczos-3; diffusers uses PIL's Lanczos, which is
//!   the same filter but not bit-identical), and map `u8 → x/255 → 2x − 1` in `[-1, 1]`.
//! - Masks become grey with PIL's integer luma (`(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16`), are
//!   resized the same way, then binarized: `x/255 ≥ 0.5` (i.e. `u8 ≥ 128`) repaints (1), the rest
//!   is kept (0). White repaints, black keeps, as on fal.
//! - The masked image is `image × (mask < 0.5)`: the repainted region becomes 0, mid-grey.
//! - The latent mask is the mask sampled at every `scale`-th pixel: `interpolate(mode="nearest")`
//!   from `(h, w)` to `(h/scale, w/scale)` reads source pixel `i·scale`.
//! - Output: `(x/2 + 0.5).clamp(0, 1)`, `× 255`, rounded half to even (`numpy.round`), as `u8`.

use burn::tensor::{Device, Tensor, TensorData};
use image::{DynamicImage, GrayImage, ImageFormat, RgbImage, imageops::FilterType};

use super::PipelineError;

/// The most pixels an input image may have by default (16 MP, 4096²): a small file can claim a
/// huge image (a 420 KB PNG of 12000² decodes to 432 MB), so the size is read from the header
/// and checked before anything is decoded.
pub const MAX_INPUT_PIXELS: u64 = 4096 * 4096;

/// Decodes PNG, JPEG or WebP bytes of at most [`MAX_INPUT_PIXELS`]. `field` names the input in
/// errors (`image_url`, `mask_url`).
pub fn decode(bytes: &[u8], field: &str) -> Result<DynamicImage, PipelineError> {
    decode_at_most(bytes, field, MAX_INPUT_PIXELS)
}

/// [`decode`] with another pixel cap: the header's width × height is checked first.
pub fn decode_at_most(
    bytes: &[u8],
    field: &str,
    max_pixels: u64,
) -> Result<DynamicImage, PipelineError> {
    if bytes.is_empty() {
        return Err(PipelineError::input(field, "the image is empty (0 bytes)"));
    }
    let format = image::guess_format(bytes).map_err(|_| {
        PipelineError::input(
            field,
            "not an image this engine decodes (PNG, JPEG or WebP expected)",
        )
    })?;
    let broken = |e: image::ImageError| {
        PipelineError::input(field, format!("the {format:?} image does not decode: {e}"))
    };
    let reader = |bytes| image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let (width, height) = reader(bytes).into_dimensions().map_err(broken)?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(PipelineError::input(
            field,
            format!(
                "the image is {width}×{height} ({:.1} MP), over the limit of {:.1} MP",
                pixels as f64 / 1e6,
                max_pixels as f64 / 1e6
            ),
        ));
    }
    reader(bytes).decode().map_err(broken)
}

/// PIL's `convert("RGB")`.
pub fn to_rgb(image: &DynamicImage) -> RgbImage {
    image.to_rgb8()
}

/// PIL's `convert("L")`: ITU-R 601-2 luma in 16-bit fixed point, rounded; alpha ignored.
pub fn to_luma(image: &DynamicImage) -> GrayImage {
    match image {
        DynamicImage::ImageLuma8(g) => g.clone(),
        other => {
            let rgb = other.to_rgb8();
            GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
                let [r, g, b] = rgb.get_pixel(x, y).0;
                let l = (r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16;
                image::Luma([l as u8])
            })
        }
    }
}

/// Resized (Lanczos-3) to `width × height`, or as it is when it already has that size.
pub(crate) fn resize_rgb(image: RgbImage, width: u32, height: u32) -> RgbImage {
    if image.dimensions() == (width, height) {
        image
    } else {
        image::imageops::resize(&image, width, height, FilterType::Lanczos3)
    }
}

fn resize_luma(image: GrayImage, width: u32, height: u32) -> GrayImage {
    if image.dimensions() == (width, height) {
        image
    } else {
        image::imageops::resize(&image, width, height, FilterType::Lanczos3)
    }
}

/// An image in `[-1, 1]`, `[1, 3, height, width]`, resized to the generation size if needed.
pub fn image_tensor(image: &DynamicImage, width: u32, height: u32, device: &Device) -> Tensor<4> {
    let rgb = resize_rgb(to_rgb(image), width, height);
    let (w, h) = (width as usize, height as usize);
    let mut values = vec![0f32; 3 * w * h];
    for (i, p) in rgb.pixels().enumerate() {
        for c in 0..3 {
            values[c * w * h + i] = 2.0 * (p.0[c] as f32 / 255.0) - 1.0;
        }
    }
    Tensor::from_data(TensorData::new(values, [1, 3, h, w]), device)
}

/// The binarized mask: 1 where the model paints, 0 where the image is kept; `[h][w]` row-major.
pub fn binary_mask(mask: &DynamicImage, width: u32, height: u32) -> Vec<f32> {
    let grey = resize_luma(to_luma(mask), width, height);
    grey.pixels()
        .map(|p| {
            if p.0[0] as f32 / 255.0 >= 0.5 {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// `[1, 1, h, w]` from a row-major mask.
pub fn mask_tensor(mask: &[f32], width: u32, height: u32, device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(mask.to_vec(), [1, 1, height as usize, width as usize]),
        device,
    )
}

/// The mask at latent resolution: nearest-neighbour, reading pixel `(i·scale, j·scale)`.
pub fn latent_mask(
    mask: &[f32],
    width: u32,
    height: u32,
    scale: u32,
    device: &Device,
) -> Tensor<4> {
    let (lw, lh) = ((width / scale) as usize, (height / scale) as usize);
    let (w, s) = (width as usize, scale as usize);
    let values: Vec<f32> = (0..lh)
        .flat_map(|i| (0..lw).map(move |j| mask[i * s * w + j * s]))
        .collect();
    Tensor::from_data(TensorData::new(values, [1, 1, lh, lw]), device)
}

/// The mask grown to whole latent cells (opt-in, [`MaskOptions::align`]): a latent pixel is
/// repainted if any pixel of its `scale × scale` cell is (max pooling, where diffusers samples one
/// pixel per cell), then grown by `grow` latent pixels in the 8 directions. Answers the latent mask
/// (row-major, `h/scale × w/scale`) and the same mask at full resolution, so the masked image
/// hides exactly what the latent mask repaints — no seam where a mask edge cuts a cell.
pub fn aligned_mask(
    mask: &[f32],
    width: u32,
    height: u32,
    scale: u32,
    grow: u32,
) -> (Vec<f32>, Vec<f32>) {
    let (w, h, s) = (width as usize, height as usize, scale as usize);
    let (lw, lh) = (w / s, h / s);
    let mut cells = vec![0f32; lw * lh];
    for y in 0..lh * s {
        for x in 0..lw * s {
            if mask[y * w + x] > 0.5 {
                cells[(y / s) * lw + x / s] = 1.0;
            }
        }
    }
    for _ in 0..grow {
        let prev = cells.clone();
        for y in 0..lh {
            for x in 0..lw {
                let near = (y.saturating_sub(1)..=(y + 1).min(lh - 1)).any(|yy| {
                    (x.saturating_sub(1)..=(x + 1).min(lw - 1)).any(|xx| prev[yy * lw + xx] > 0.5)
                });
                if near {
                    cells[y * lw + x] = 1.0;
                }
            }
        }
    }
    let full: Vec<f32> = (0..h)
        .flat_map(|y| {
            let cells = &cells;
            (0..w).map(move |x| cells[((y / s).min(lh - 1)) * lw + (x / s).min(lw - 1)])
        })
        .collect();
    (cells, full)
}

/// A separable Gaussian blur of a row-major mask (σ = radius / 2, kernel ±radius), for soft
/// compositing edges.
pub fn blur_mask(mask: &[f32], width: u32, height: u32, radius: u32) -> Vec<f32> {
    if radius == 0 {
        return mask.to_vec();
    }
    let (w, h, r) = (width as usize, height as usize, radius as i64);
    let sigma = radius as f32 / 2.0;
    let kernel: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0;
                for (k, weight) in kernel.iter().enumerate() {
                    let d = k as i64 - r;
                    let (xx, yy) = if horizontal {
                        ((x as i64 + d).clamp(0, w as i64 - 1) as usize, y)
                    } else {
                        (x, (y as i64 + d).clamp(0, h as i64 - 1) as usize)
                    };
                    acc += weight * src[yy * w + xx];
                }
                out[y * w + x] = acc;
            }
        }
        out
    };
    pass(&pass(mask, true), false)
}

/// `original · (1 − m) + generated · m` per pixel, rounded: the kept region exactly as it was
/// (opt-in, [`MaskOptions::composite`]; the VAE round trip otherwise shifts it slightly).
pub fn composite(original: &RgbImage, generated: &RgbImage, mask: &[f32]) -> RgbImage {
    RgbImage::from_fn(generated.width(), generated.height(), |x, y| {
        let m = mask[(y * generated.width() + x) as usize].clamp(0.0, 1.0);
        let (o, g) = (original.get_pixel(x, y).0, generated.get_pixel(x, y).0);
        image::Rgb(std::array::from_fn(|c| {
            (o[c] as f32 * (1.0 - m) + g[c] as f32 * m).round() as u8
        }))
    })
}

/// Opt-in improvements over diffusers' inpainting, all off by default so that defaults give
/// diffusers' images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaskOptions {
    /// Paste the result over the original outside the mask.
    pub composite: bool,
    /// Grow the mask to whole latent cells plus `align_grow` latent pixels.
    pub align: bool,
    pub align_grow: u32,
    /// Blur radius (pixels) of the compositing mask's edge.
    pub blur: u32,
}

/// Decoded images (`[n, 3, h, w]` in `[-1, 1]`) to 8-bit RGB.
pub fn to_images(values: &[f32], n: usize, width: u32, height: u32) -> Vec<RgbImage> {
    let (w, h) = (width as usize, height as usize);
    (0..n)
        .map(|k| {
            let plane = &values[k * 3 * w * h..(k + 1) * 3 * w * h];
            RgbImage::from_fn(width, height, |x, y| {
                let i = y as usize * w + x as usize;
                let px = |c: usize| {
                    let v = (plane[c * w * h + i] / 2.0 + 0.5).clamp(0.0, 1.0);
                    (v * 255.0).round_ties_even() as u8
                };
                image::Rgb([px(0), px(1), px(2)])
            })
        })
        .collect()
}

/// Output formats, by fal's `image_format` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Png,
    Jpeg,
}

impl OutputFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Png => "image/png",
            OutputFormat::Jpeg => "image/jpeg",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Png => "png",
            OutputFormat::Jpeg => "jpg",
        }
    }

    /// From a file name's extension (`.png`, `.jpg`, `.jpeg`).
    pub fn from_path(path: &str) -> Option<Self> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some(OutputFormat::Png),
            "jpg" | "jpeg" => Some(OutputFormat::Jpeg),
            _ => None,
        }
    }
}

/// Encodes an image (JPEG at quality 95).
pub fn encode(image: &RgbImage, format: OutputFormat) -> Result<Vec<u8>, PipelineError> {
    let mut out = std::io::Cursor::new(Vec::new());
    let result = match format {
        OutputFormat::Png => image.write_to(&mut out, ImageFormat::Png),
        OutputFormat::Jpeg => {
            let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
            enc.encode_image(image)
        }
    };
    result.map_err(|e| PipelineError::Internal(format!("encoding the output image: {e}")))?;
    Ok(out.into_inner())
}

/// Peak signal-to-noise ratio of two 8-bit images of one size, in dB (∞ when equal).
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(
        a.dimensions(),
        b.dimensions(),
        "PSNR of images of different sizes"
    );
    let n = a.as_raw().len() as f64;
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    if se == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255f64.powi(2) / (se / n)).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG that claims `width`×`height` in its header and carries a few bytes of data.
    fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let body = [kind, data].concat();
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        };
        let ihdr = [
            &width.to_be_bytes()[..],
            &height.to_be_bytes(),
            &[8, 2, 0, 0, 0],
        ]
        .concat();
        chunk(b"IHDR", &ihdr);
        chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00]);
        chunk(b"IEND", &[]);
        out
    }

    #[test]
    fn an_image_over_the_pixel_cap_is_refused_from_its_header() {
        for (w, h) in [(12_000, 12_000), (4097, 4096), (100_000, 1_000)] {
            let err = decode(&png_claiming(w, h), "image_url")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("{w}×{h}")) && err.contains("over the limit"),
                "{err}"
            );
        }
        // Past the decoder's own memory limit the header read refuses it first.
        assert!(decode_at_most(&png_claiming(2_000_000_000, 2), "image_url", u64::MAX).is_err());
        // Under the cap the same kind of bytes get as far as decoding (and fail there: no data).
        let err = decode(&png_claiming(64, 64), "image_url")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not decode"), "{err}");
        // A real image under the cap decodes.
        let mut small = Vec::new();
        DynamicImage::ImageRgb8(RgbImage::new(3, 2))
            .write_to(&mut std::io::Cursor::new(&mut small), ImageFormat::Png)
            .unwrap();
        assert_eq!(decode_at_most(&small, "image_url", 6).unwrap().width(), 3);
        assert!(decode_at_most(&small, "image_url", 5).is_err());
    }

    #[test]
    fn luma_is_pils() {
        // PIL: Image.new("RGB", (1, 1), c).convert("L").getpixel((0, 0))
        for (rgb, want) in [
            ([255, 0, 0], 76),
            ([0, 255, 0], 150),
            ([0, 0, 255], 29),
            ([128, 128, 128], 128),
            ([12, 200, 99], 132),
        ] {
            let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, image::Rgb(rgb)));
            assert_eq!(to_luma(&img).get_pixel(0, 0).0[0], want, "{rgb:?}");
        }
    }

    #[test]
    fn masks_binarize_at_half() {
        let img = DynamicImage::ImageLuma8(GrayImage::from_fn(4, 1, |x, _| {
            image::Luma([[0, 127, 128, 255][x as usize]])
        }));
        assert_eq!(binary_mask(&img, 4, 1), [0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn aligned_masks_cover_whole_cells_and_grow() {
        // 8×8 image, scale 4 → 2×2 latent; one repainted pixel in the top-left cell.
        let mut m = vec![0f32; 64];
        m[8 + 1] = 1.0;
        let (cells, full) = aligned_mask(&m, 8, 8, 4, 0);
        assert_eq!(cells, [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(full.iter().filter(|&&v| v > 0.5).count(), 16);
        let (cells, _) = aligned_mask(&m, 8, 8, 4, 1);
        assert_eq!(cells, [1.0; 4]);
    }

    #[test]
    fn blur_keeps_mass_and_softens_edges() {
        let m: Vec<f32> = (0..100)
            .map(|i| if i % 10 < 5 { 0.0 } else { 1.0 })
            .collect();
        let b = blur_mask(&m, 10, 10, 2);
        assert!(
            b[4] > 0.0 && b[4] < 0.5 && b[5] > 0.5 && b[5] < 1.0,
            "{:?}",
            &b[..10]
        );
        assert!((b.iter().sum::<f32>() - 50.0).abs() < 1e-3);
        let original = RgbImage::from_pixel(2, 1, image::Rgb([0, 0, 0]));
        let generated = RgbImage::from_pixel(2, 1, image::Rgb([200, 100, 50]));
        let c = composite(&original, &generated, &[0.0, 0.5]);
        assert_eq!(c.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(c.get_pixel(1, 0).0, [100, 50, 25]);
    }

    #[test]
    fn undecodable_bytes_name_the_field() {
        let err = decode(b"GIF89a nope", "mask_url").unwrap_err().to_string();
        assert!(err.contains("mask_url"), "{err}");
        let err = decode(&[], "image_url").unwrap_err().to_string();
        assert!(err.contains("image_url") && err.contains("empty"), "{err}");
    }
}
