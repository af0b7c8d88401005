//! Reading vote histograms from CSV: one query per line, one non-negative
//! integer vote count per class, comma-separated, no header. Blank lines are
//! skipped; surrounding spaces and Windows line endings are accepted. Every
//! error names its (1-based) line.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Errors reading a votes file.
#[derive(Debug, Error)]
pub enum VotesError {
    /// The file could not be read.
    #[error("cannot read votes file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A field is not a non-negative integer.
    #[error("line {line}, column {column}: {value:?} is not a non-negative integer vote count")]
    BadCount {
        /// 1-based line number.
        line: usize,
        /// 1-based column number.
        column: usize,
        /// The offending text.
        value: String,
    },
    /// A line has a different number of classes than the first one.
    #[error("line {line}: expected {expected} vote counts (as on the first line), found {found}")]
    ColumnMismatch {
        /// 1-based line number.
        line: usize,
        /// Columns on the first data line.
        expected: usize,
        /// Columns on this line.
        found: usize,
    },
    /// A line has fewer than two classes.
    #[error("line {line}: a histogram needs at least 2 classes, found {found}")]
    TooFewClasses {
        /// 1-based line number.
        line: usize,
        /// Columns on this line.
        found: usize,
    },
    /// No data lines.
    #[error("the votes file has no queries")]
    Empty,
    /// The text is not CSV.
    #[error("votes file: {0}")]
    Csv(String),
}

/// Parses CSV text into a votes matrix (rows = queries, columns = classes).
/// The csv crate reads the records (quoting, CRLF, blank lines); the checks
/// that make them vote counts are ours, each naming its line.
pub fn parse_votes_csv(text: &str) -> Result<Vec<Vec<f64>>, VotesError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        // Rows of other widths are read, so that the error names both widths.
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| VotesError::Csv(e.to_string()))?;
        let line = record.position().map_or(0, |p| line_of(text, p.byte() as usize));
        // A line of spaces is one empty field: a blank line.
        if record.len() == 1 && record[0].is_empty() {
            continue;
        }
        let mut row = Vec::with_capacity(record.len());
        for (j, f) in record.iter().enumerate() {
            let v: u32 = f.parse().map_err(|_| VotesError::BadCount {
                line,
                column: j + 1,
                value: f.to_string(),
            })?;
            row.push(f64::from(v));
        }
        if row.len() < 2 {
            return Err(VotesError::TooFewClasses { line, found: row.len() });
        }
        if let Some(first) = rows.first() {
            if first.len() != row.len() {
                return Err(VotesError::ColumnMismatch {
                    line,
                    expected: first.len(),
                    found: row.len(),
                });
            }
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(VotesError::Empty);
    }
    Ok(rows)
}

/// The 1-based line of the record that starts at `byte` or after the line
/// breaks that follow it (the csv crate places a record after skipped blank
/// lines at the first of them).
fn line_of(text: &str, byte: usize) -> usize {
    let rest = text.get(byte..).unwrap_or("");
    let start = byte + (rest.len() - rest.trim_start_matches(['\r', '\n']).len());
    text.as_bytes()[..start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Reads and parses a votes CSV file.
pub fn read_votes_csv(path: &Path) -> Result<Vec<Vec<f64>>, VotesError> {
    let text = std::fs::read_to_string(path).map_err(|source| VotesError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_votes_csv(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_skips_blank_lines() {
        let v = parse_votes_csv("1,2,3\r\n\n 4 , 5,6\n").expect("valid");
        assert_eq!(v, vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_votes_csv("1,2\n3,x\n").expect_err("bad");
        assert!(matches!(e, VotesError::BadCount { line: 2, column: 2, .. }));
        assert!(e.to_string().contains("line 2"));
        let e = parse_votes_csv("1,2\n\n3,4,5\n").expect_err("bad");
        assert!(matches!(
            e,
            VotesError::ColumnMismatch {
                line: 3,
                expected: 2,
                found: 3
            }
        ));
        assert!(matches!(
            parse_votes_csv("1,-2").expect_err("neg"),
            VotesError::BadCount { line: 1, .. }
        ));
        assert!(matches!(
            parse_votes_csv("1.5,2").expect_err("frac"),
            VotesError::BadCount { .. }
        ));
        assert!(matches!(
            parse_votes_csv("7").expect_err("one"),
            VotesError::TooFewClasses { line: 1, found: 1 }
        ));
        assert!(matches!(
            parse_votes_csv("1,2,").expect_err("trailing"),
            VotesError::BadCount { column: 3, .. }
        ));
        assert!(matches!(
            parse_votes_csv("\n \n").expect_err("empty"),
            VotesError::Empty
        ));
        // Line numbers count the blank lines the csv reader skips.
        assert!(matches!(
            parse_votes_csv("1,2\r\n\r\n\r\n3,x").expect_err("bad"),
            VotesError::BadCount { line: 4, column: 2, .. }
        ));
        // Quoted fields are CSV too.
        assert_eq!(parse_votes_csv("\"1\",2").expect("quoted"), vec![vec![1.0, 2.0]]);
        let e = read_votes_csv(Path::new("/nonexistent/votes.csv")).expect_err("io");
        assert!(e.to_string().contains("/nonexistent/votes.csv"));
    }

    /// The property-test twin of `fuzz/fuzz_targets/votes_csv.rs`: any text
    /// over the characters that matter gives a clear error or a rectangular
    /// matrix of integer counts with at least two classes; a matrix written
    /// back out parses to itself.
    mod props {
        use super::*;
        use proptest::prelude::*;

        const CHARS: &[char] = &['0', '1', '7', '9', ',', ' ', '\n', '\r', '-', '+', '.', 'e', 'x', '\u{a0}'];

        fn text() -> impl Strategy<Value = String> {
            proptest::collection::vec(proptest::sample::select(CHARS), 0..60).prop_map(|c| c.into_iter().collect())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_text_parses_or_errs(t in text()) {
                if let Ok(rows) = parse_votes_csv(&t) {
                    let classes = rows[0].len();
                    prop_assert!(classes >= 2);
                    for row in &rows {
                        prop_assert_eq!(row.len(), classes);
                        prop_assert!(row.iter().all(|v| *v >= 0.0 && v.fract() == 0.0 && *v <= f64::from(u32::MAX)));
                    }
                }
            }

            #[test]
            fn written_matrices_round_trip(rows in proptest::collection::vec(proptest::collection::vec(any::<u32>(), 3), 1..8)) {
                let csv: String = rows.iter().map(|r| r.iter().map(u32::to_string).collect::<Vec<_>>().join(",") + "\n").collect();
                let parsed = parse_votes_csv(&csv).expect("valid");
                let want: Vec<Vec<f64>> = rows.iter().map(|r| r.iter().map(|&v| f64::from(v)).collect()).collect();
                prop_assert_eq!(parsed, want);
            }
        }
    }
}
