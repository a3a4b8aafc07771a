use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = kdns_host::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("KDNS_LOG").unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    let json = cli.log_format == kdns_host::cli::LogFormat::Json;
    match cli.log_format {
        // One JSON object per line, for log pipelines (fields as keys, the message as `message`).
        kdns_host::cli::LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
        kdns_host::cli::LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
    match kdns_host::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if json {
                tracing::error!(error = %format!("{e:#}"), "kdns: cannot continue");
            } else {
                eprintln!("kdns: error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
