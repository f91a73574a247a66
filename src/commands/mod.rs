//! What the command line asks for: `serve` (the default) builds and runs
//! the `app`; the other subcommands (`keys`, `migrate`, `demo`, `import`)
//! run once and exit.

mod keys;

use crate::{
    app::{Application, shutdown_signal},
    config::{Cli, Command, Settings},
    database::{Database, Opener},
    store,
};

/// Runs what the command line asks for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => serve(cli.settings).await,
        Some(Command::Serve(settings)) => serve(settings).await,
        Some(Command::Demo(options)) => crate::demo::run(options).await,
        Some(Command::Import(options)) => crate::import::run(options).await,
        Some(Command::Keys(command)) => {
            let db = Database::open(command.database(), Opener::Command("keys")).await?;
            let result = match store::migrate(&db.pool).await {
                Ok(()) => keys::run(&db.pool, command).await,
                Err(err) => Err(err),
            };
            db.close().await;
            result
        }
        Some(Command::Migrate(database)) => {
            let db = Database::open(&database, Opener::Command("migrate")).await?;
            let migrated = store::migrate(&db.pool).await;
            db.close().await;
            migrated?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    app.run_until_stopped(shutdown_signal()).await
}
