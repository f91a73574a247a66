use clap::Parser;
use kpi_service::{commands, config::Cli, observe::telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let telemetry = telemetry::init(cli.log_format);
    let result = commands::run(cli).await;
    // Off the runtime's threads: flushing waits for the exporter's thread.
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .ok();
    match result {
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
