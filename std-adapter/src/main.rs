//! The `stepembed` command-line tool. See [`stepembed::cli`].

fn main() {
    let code = stepembed::cli::run(std::env::args_os().skip(1).collect());
    std::process::exit(code);
}
