use clap::Parser;
use kpi_service::{app, config::Cli, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match app::run_cli(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            if let Some(incomplete) = err.downcast_ref::<kpi_service::import::Incomplete>() {
                eprintln!("import: {incomplete}");
                return std::process::ExitCode::from(incomplete.exit_code());
            }
            tracing::error!(error = format!("{err:#}"), "kpi-service failed");
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
