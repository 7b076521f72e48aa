//! The `sessiond` binary: parse the command line, hand over to `cli::run`.

fn main() -> std::process::ExitCode {
    sessiond::cli::main()
}
