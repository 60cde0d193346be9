//! The `sesame` binary: parse the command line, read `.env`, run.

use std::process::ExitCode;

use clap::Parser;
use sesame::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // A missing .env is normal; a malformed one is worth saying.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("sesame: reading .env: {e}");
        return ExitCode::FAILURE;
    }
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sesame: {e:#}");
            ExitCode::FAILURE
        }
    }
}
