//! The real repositories' component configs, byte for byte (`tests/fixtures/real-configs/`, from
//! `../shared/reference/real-models/`), parse and plan as diffusers reads them: their `null`s
//! (`"upcast_attention": null` in SDXL's UNet) are defaults, their training keys are ignored.

use fresco_diffusion::models::clip::ClipTextConfig;
use fresco_diffusion::models::unet::UNetConfig;
use fresco_diffusion::models::vae::VaeConfig;

fn config(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/real-configs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn sdxl_inpaintings_configs_parse_and_plan() {
    let unet = UNetConfig::from_json(&config("sdxl-inpaint-unet.json")).unwrap();
    assert!(!unet.upcast_attention, "null reads as diffusers' default");
    let plan = unet.plan().unwrap();
    assert_eq!(plan.in_channels, 9);
    assert_eq!(plan.channels, [320, 640, 1280]);
    assert!(plan.text_time.is_some(), "SDXL's added conditioning");
    let vae = VaeConfig::from_json(&config("sdxl-inpaint-vae.json")).unwrap();
    assert_eq!(vae.latent_channels, 4);
    let one = ClipTextConfig::from_json(&config("sdxl-inpaint-text_encoder.json")).unwrap();
    let two = ClipTextConfig::from_json(&config("sdxl-inpaint-text_encoder_2.json")).unwrap();
    assert_eq!((one.hidden_size, two.hidden_size), (768, 1280));
}

#[test]
fn sd15_inpaintings_configs_parse_and_plan() {
    let plan = UNetConfig::from_json(&config("sd15-inpaint-unet.json"))
        .unwrap()
        .plan()
        .unwrap();
    assert_eq!(plan.in_channels, 9);
    assert_eq!(plan.channels, [320, 640, 1280, 1280]);
    VaeConfig::from_json(&config("sd15-inpaint-vae.json")).unwrap();
    let clip = ClipTextConfig::from_json(&config("sd15-inpaint-text_encoder.json")).unwrap();
    assert_eq!(clip.hidden_size, 768);
}

#[test]
fn a_null_mid_block_is_diffusers_no_mid_block_not_the_default() {
    let mut json: serde_json::Value =
        serde_json::from_str(&config("sd15-inpaint-unet.json")).unwrap();
    json["mid_block_type"] = serde_json::Value::Null;
    let unet = UNetConfig::from_json(&json.to_string()).unwrap();
    assert_eq!(unet.mid_block_type, None);
    let e = unet.plan().unwrap_err().to_string();
    assert!(e.contains("mid_block_type"), "{e}");
}
