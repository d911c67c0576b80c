//! `tessera-agent`: the command line over the agent library, trusting what build.rs compiled in (a vendor
//! build) or, without that, the flags (a development build that says so).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tessera_agent::cli::main(tessera_agent::vendor::Trust::from_build())
}
