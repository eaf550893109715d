//! `fresco`: the command-line front of the project.

mod generate;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fresco",
    version,
    about = "fal-compatible inpainting and image-to-image, self-hosted"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the fal-compatible queue, storage and /api/fal/proxy (and the demo site at /).
    Serve(serve::ServeArgs),
    /// Repaint the white part of a mask (inpainting), as fal-ai/inpaint does.
    Inpaint {
        #[command(flatten)]
        args: generate::GenerateArgs,
        /// The mask: white is repainted, black kept (PNG, JPEG or WebP).
        #[arg(long)]
        mask: std::path::PathBuf,
    },
    /// Repaint a whole image guided by a prompt (image-to-image).
    Img2img(generate::GenerateArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FRESCO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve::run(args)),
        Command::Inpaint { args, mask } => runtime.block_on(generate::run(args, Some(mask))),
        Command::Img2img(args) => runtime.block_on(generate::run(args, None)),
    }
}
