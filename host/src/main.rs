use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KDNS_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let cli = kdns_host::cli::Cli::parse();
    match kdns_host::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kdns: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
