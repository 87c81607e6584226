//! `concierge-agent`: the host agent on its own, for hosts that need nothing
//! else of concierge. It takes the same flags and variables as
//! `concierge agent` and behaves the same; it is smaller because it is built
//! from the protocol and client crates alone.

use std::process::ExitCode;

use clap::Parser;
use concierge_agent::settings::AgentArgs;

/// The same allocator as the `concierge` binary, so the agent behaves the
/// same in both.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run the host agent: serve operators' requests through a gateway.
#[derive(Parser)]
#[command(
    name = "concierge-agent",
    version,
    after_long_help = concierge_agent::refusal::exit_statuses()
)]
struct Cli {
    #[command(flatten)]
    agent: AgentArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = concierge_client::logging::init() {
        eprintln!("concierge-agent: {e}");
        // As `concierge agent`: an invalid environment exits with 2.
        return ExitCode::from(2);
    }
    concierge_agent::main(cli.agent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
