//! The error table is defined once (`spool_client::errors`); the README and the proto's header
//! repeat it for people. These tests fail when either text disagrees with the code.

use std::collections::BTreeSet;
use std::path::Path;

use spool_client::errors::{ERROR_CASES, ERROR_DOMAIN, code_name};

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|error| panic!("read {path}: {error}"))
}

/// The cells of each row of the README's table under `header`, the header row excluded.
fn table_rows(text: &str, header: &str) -> Vec<Vec<String>> {
    let start = text
        .find(header)
        .unwrap_or_else(|| panic!("README.md has no table headed {header:?}"));
    text[start..]
        .lines()
        .skip(2) // the header and the |---| line
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn the_readme_error_table_is_the_code_table() {
    let readme = read("README.md");
    let rows = table_rows(&readme, "| Case | gRPC code | CMQ code | reason |");
    let expected: Vec<Vec<String>> = ERROR_CASES
        .iter()
        .map(|case| {
            vec![
                case.meaning.to_string(),
                code_name(case.grpc_code).to_string(),
                case.cmq_code.to_string(),
                case.reason.to_string(),
            ]
        })
        .collect();
    assert_eq!(
        rows, expected,
        "README.md's error table differs from spool_client::errors::ERROR_CASES"
    );
    assert!(readme.contains(&format!("domain `{ERROR_DOMAIN}`")));
}

#[test]
fn the_proto_header_lists_every_code_pair_of_the_code_table() {
    let proto = read("proto/spool/v1/queue.proto");
    let header: Vec<&str> = proto
        .lines()
        .take_while(|line| line.starts_with("//"))
        .map(|line| line.trim_start_matches('/'))
        .collect();
    assert!(
        header
            .iter()
            .any(|line| line.contains(&format!("(domain \"{ERROR_DOMAIN}\")"))),
        "the proto's header does not name the ErrorInfo domain"
    );
    // Rows of the form `   GRPC_CODE  NNNN what, NNNN what`, continued on lines indented
    // deeper: each four-digit number in a row is one (gRPC code, CMQ code) pair.
    let code_names: BTreeSet<&str> = ERROR_CASES
        .iter()
        .map(|case| code_name(case.grpc_code))
        .collect();
    let mut listed = BTreeSet::new();
    let mut current = None;
    for line in header {
        let first = line.split_whitespace().next().unwrap_or("");
        if line.starts_with("   ") && code_names.contains(first) {
            current = Some(first);
        } else if !line.starts_with("    ") {
            current = None;
        }
        if let Some(code) = current {
            for word in line.split(|c: char| !c.is_ascii_digit()) {
                if word.len() == 4 {
                    listed.insert((code.to_string(), word.parse::<i32>().expect("digits")));
                }
            }
        }
    }
    let expected: BTreeSet<(String, i32)> = ERROR_CASES
        .iter()
        .map(|case| (code_name(case.grpc_code).to_string(), case.cmq_code))
        .collect();
    assert_eq!(
        listed, expected,
        "the error table at the top of proto/spool/v1/queue.proto differs from \
         spool_client::errors::ERROR_CASES"
    );
}

#[test]
fn the_python_clients_docs_name_every_cmq_code_of_the_code_table() {
    // The Python client's CMQ layer documents the numbers its exceptions carry; a case added
    // to the table must be added there too.
    for path in [
        "clients/python/src/spool_client/cmq/cmq_exception.py",
        "clients/python/README.md",
    ] {
        let text = read(path);
        for case in &ERROR_CASES {
            assert!(
                text.contains(&format!("{} ", case.cmq_code)),
                "{path} does not document CMQ code {} ({})",
                case.cmq_code,
                case.reason
            );
        }
    }
}
