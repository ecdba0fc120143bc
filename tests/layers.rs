//! The layers point down: the protocol core names nothing of the reactor, the application's
//! helpers or scaling out; the reactor names nothing of the last two (see `src/lib.rs`).

use std::fs;
use std::path::Path;

/// The `use crate::…` lines of every `.rs` file under `dir` that name one of `above`.
fn uses_of(dir: &Path, above: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).expect("a source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            found.extend(uses_of(&path, above));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).expect("a source file");
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if above
                    .iter()
                    .any(|layer| line.starts_with(&format!("use crate::{layer}")))
                {
                    found.push(format!("{}:{}: {line}", path.display(), n + 1));
                }
            }
        }
    }
    found
}

#[test]
fn each_layer_uses_only_the_ones_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let proto = uses_of(&src.join("proto"), &["app", "scale", "reactor"]);
    assert!(
        proto.is_empty(),
        "the protocol core reaches up:\n{}",
        proto.join("\n")
    );
    let reactor = uses_of(&src.join("reactor"), &["app", "scale"]);
    assert!(
        reactor.is_empty(),
        "the reactor reaches up:\n{}",
        reactor.join("\n")
    );
}
