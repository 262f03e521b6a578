use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = rdev::cli::Cli::parse();
    match rdev::cli::run(cli).await {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
