//! The `keyseat` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    keyseat::cli::main()
}
