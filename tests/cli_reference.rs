//! The README's CLI reference is the `--help` clap renders, so the two cannot drift apart.

mod common;

/// The README's CLI reference, between `<!-- cli-reference:start -->` and
/// `<!-- cli-reference:end -->`, is the `--help` of every subcommand as clap renders it.
/// `STEPEMBED_WRITE_CLI_REFERENCE=FILE` writes the expected block to FILE.
#[test]
fn readme_cli_reference_matches_the_help() {
    let expected = format!("```text\n{}```\n", stepembed::cli::reference());
    if let Some(path) = std::env::var_os("STEPEMBED_WRITE_CLI_REFERENCE") {
        std::fs::write(path, &expected).unwrap();
    }
    let readme = std::fs::read_to_string(common::fixture("../../README.md")).unwrap();
    let block = readme
        .split_once("<!-- cli-reference:start -->\n")
        .and_then(|(_, rest)| rest.split_once("<!-- cli-reference:end -->"))
        .map(|(block, _)| block);
    let Some(block) = block else {
        panic!("README.md has no <!-- cli-reference:start --> … <!-- cli-reference:end --> block; it must hold:\n{expected}");
    };
    if block != expected {
        let first = block.lines().zip(expected.lines()).position(|(a, b)| a != b);
        let line = first.unwrap_or_else(|| block.lines().count().min(expected.lines().count()));
        panic!(
            "README.md's CLI reference differs from the --help output at its line {}:\n  README: {:?}\n  --help: {:?}\n\
             Regenerate it with STEPEMBED_WRITE_CLI_REFERENCE=FILE cargo test --test cli_reference",
            line + 1,
            block.lines().nth(line),
            expected.lines().nth(line)
        );
    }
}
