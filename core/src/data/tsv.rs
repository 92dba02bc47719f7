//! Tab-separated tables with a header row and standard double-quote quoting, as the MasakhaNEWS
//! and SIB-200 files are written: quoted fields may hold tabs, quotes (doubled) and newlines, so
//! splitting on tabs and line ends miscounts rows (eng and xho of MasakhaNEWS). Python's `csv`
//! with `delimiter='\t'` and default quoting reads the same rows; there is no field size limit.
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A whole table: the header and every row, each with exactly the header's number of fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub path: PathBuf,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Index of the named column, or an error naming the columns the file has.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.header.iter().position(|h| h == name).ok_or_else(|| {
            Error::format(
                "tsv",
                &self.path,
                format!("no column `{name}` (columns: {})", self.header.join(", ")),
            )
        })
    }
}

/// Reads a TSV file; a row with another number of fields than the header (what a file cut short
/// mostly leaves) or bytes that are not UTF-8 are errors naming the record.
pub fn read_tsv(path: &Path) -> Result<Table> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    parse_tsv(file, path)
}

/// Parses TSV from any reader; `path` names the source in errors.
pub fn parse_tsv(reader: impl std::io::Read, path: &Path) -> Result<Table> {
    let mut r = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .has_headers(true)
        .flexible(false)
        .from_reader(reader);
    let bad = |e: csv::Error| match e.kind() {
        csv::ErrorKind::Io(_) => match e.into_kind() {
            csv::ErrorKind::Io(io) => Error::io(path, io),
            _ => Error::format("tsv", path, "i/o error"),
        },
        _ => Error::format("tsv", path, e.to_string()),
    };
    let header: Vec<String> = r.headers().map_err(bad)?.iter().map(String::from).collect();
    if header.iter().all(String::is_empty) {
        return Err(Error::format("tsv", path, "no header row"));
    }
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(bad)?;
        rows.push(rec.iter().map(String::from).collect());
    }
    Ok(Table {
        path: path.to_path_buf(),
        header,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Table> {
        parse_tsv(s.as_bytes(), Path::new("t.tsv"))
    }

    #[test]
    fn quoted_fields_hold_tabs_quotes_and_newlines() -> Result<()> {
        let t = parse("a\tb\nx\t\"one\ttwo\n\"\"three\"\"\"\ny\tplain \"mid\" quote\n")?;
        assert_eq!(t.header, vec!["a", "b"]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0][1], "one\ttwo\n\"three\"");
        assert_eq!(t.rows[1][1], "plain \"mid\" quote");
        assert_eq!(t.column("b")?, 1);
        let e = t
            .column("c")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("no column `c`") && e.contains("a, b"), "{e}");
        Ok(())
    }

    #[test]
    fn a_row_of_the_wrong_width_is_an_error() {
        let e = parse("a\tb\nx\ty\nz\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("t.tsv"), "{e}");
        assert!(parse("").is_err());
        assert!(parse_tsv(&[b'a', b'\t', 0xff, b'\n'][..], Path::new("t.tsv")).is_err());
    }
}
