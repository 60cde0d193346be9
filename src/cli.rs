//! The `sesame` command line.

use clap::{Parser, Subcommand};

use crate::{
    MIGRATOR,
    app::{self, AppState, Application},
    clock::Clock,
    config::Config,
    telemetry,
};

#[derive(Parser, Debug)]
#[command(name = "sesame", version, about = "Passwordless authentication server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply pending migrations, then serve HTTP until SIGTERM or SIGINT.
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Print the OpenAPI document (YAML by default); needs no database.
    Openapi {
        /// Print YAML (the default).
        #[arg(long, conflicts_with = "json")]
        yaml: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Openapi { json, .. } => {
            let service = crate::api::service(&AppState::offline());
            if json {
                println!("{}", service.spec());
            } else {
                print!("{}", service.spec_yaml());
            }
            Ok(())
        }
        Command::Migrate => {
            let config = load_config()?;
            migrate(&config).await
        }
        Command::Serve => {
            let config = load_config()?;
            migrate(&config).await?;
            let app = Application::build(config, Clock::system()).await?;
            app.run_until_stopped(app::shutdown_signal()).await
        }
    }
}

fn load_config() -> anyhow::Result<Config> {
    let config = Config::from_env()?;
    telemetry::init(config.log_format, &config.rust_log);
    Ok(config)
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use sqlx::{ConnectOptions as _, Connection as _};
    let options = config.database()?;
    let mut conn = options
        .connect()
        .await
        .context("connecting to the database at DATABASE_URL")?;
    MIGRATOR.run(&mut conn).await.context("applying migrations")?;
    conn.close().await?;
    tracing::info!("migrations applied");
    Ok(())
}
