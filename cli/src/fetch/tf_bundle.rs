//! A reader for TensorFlow tensor bundles (a SavedModel's `variables/`), without TensorFlow:
//! `variables.index` is an SSTable ([`super::sstable`]) whose empty key holds a
//! `BundleHeaderProto` and every other key a tensor name with its `BundleEntryProto` (dtype,
//! shape, shard, byte offset and size in `variables.data-0000N-of-0000M`, masked CRC-32C of the
//! bytes). Single-shard, little-endian, unsliced bundles only: what a SavedModel export writes.
use std::io::Read;

use super::crc32c;
use super::sstable::{self, Cursor};

/// `DT_FLOAT` in tensorflow/core/framework/types.proto.
pub const DT_FLOAT: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{what} is truncated at byte {offset}")]
    Truncated { what: &'static str, offset: u64 },
    #[error(
        "bad table magic {found:#018x} (expected {:#018x}): not a tensor bundle index",
        sstable::MAGIC
    )]
    BadMagic { found: u64 },
    #[error("malformed varint at byte {offset}")]
    BadVarint { offset: u64 },
    #[error("malformed block at byte {offset}: {reason}")]
    BadBlock { offset: u64, reason: String },
    #[error("the block at byte {offset} is compressed (type {kind}); only uncompressed is read")]
    Compressed { offset: u64, kind: u8 },
    #[error("the block at byte {offset} has CRC-32C {stored:#010x}, its bytes {computed:#010x}")]
    BlockChecksum {
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error("table keys out of order: {key:?} follows {prev:?}")]
    KeyOrder { prev: String, key: String },
    #[error("malformed protobuf in {what}: {reason}")]
    Proto { what: String, reason: String },
    #[error("unsupported tensor bundle: {0}")]
    Unsupported(String),
    #[error("tensor {name} has dtype {found} ({}), expected {expected}", dtype_name(*found))]
    Dtype {
        name: String,
        found: i32,
        expected: &'static str,
    },
    #[error("tensor {name}: {size} bytes, its shape {shape:?} of {dtype} needs {needed}")]
    Size {
        name: String,
        size: u64,
        shape: Vec<u64>,
        dtype: &'static str,
        needed: u64,
    },
    #[error("tensor {name}: bytes {offset}..{end} lie outside the data file ({len} bytes)")]
    OutOfRange {
        name: String,
        offset: u64,
        end: u64,
        len: u64,
    },
    #[error("tensor {name}: CRC-32C {stored:#010x} in the index, {computed:#010x} of its bytes")]
    Crc {
        name: String,
        stored: u32,
        computed: u32,
    },
    #[error("reading the data file: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, BundleError>;

/// The name of a `DataType` value, for messages.
pub fn dtype_name(dtype: i32) -> &'static str {
    match dtype {
        1 => "float32",
        2 => "float64",
        3 => "int32",
        4 => "uint8",
        5 => "int16",
        6 => "int8",
        7 => "string",
        9 => "int64",
        10 => "bool",
        14 => "bfloat16",
        19 => "float16",
        _ => "other",
    }
}

/// One tensor's `BundleEntryProto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub dtype: i32,
    pub shape: Vec<u64>,
    pub offset: u64,
    pub size: u64,
    /// Unmasked CRC-32C of the tensor's bytes, when the index records one.
    pub crc32c: Option<u32>,
}

impl Entry {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// A float32 tensor whose byte size matches its shape.
    pub fn check_f32(&self) -> Result<()> {
        if self.dtype != DT_FLOAT {
            return Err(BundleError::Dtype {
                name: self.name.clone(),
                found: self.dtype,
                expected: "float32",
            });
        }
        let needed = self.numel().saturating_mul(4);
        if self.size != needed {
            return Err(BundleError::Size {
                name: self.name.clone(),
                size: self.size,
                shape: self.shape.clone(),
                dtype: "float32",
                needed,
            });
        }
        Ok(())
    }

    fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.size)
    }
}

/// One decoded protobuf field.
enum Field<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The fields of one protobuf message, in order (unknown ones included).
fn fields<'a>(msg: &'a [u8], what: &str) -> Result<Vec<(u64, Field<'a>)>> {
    let bad = |reason: String| BundleError::Proto {
        what: what.to_string(),
        reason,
    };
    let mut c = Cursor::new(msg, 0);
    let mut out = Vec::new();
    while !c.at_end() {
        let tag = c.varint("protobuf tag").map_err(|e| bad(e.to_string()))?;
        let field = match tag & 7 {
            0 => c.varint("protobuf varint").map(Field::Varint),
            1 => c.fixed64("protobuf fixed64").map(|_| Field::Fixed64),
            2 => c
                .varint("protobuf length")
                .and_then(|n| c.take(n, "protobuf bytes"))
                .map(Field::Bytes),
            5 => c.fixed32("protobuf fixed32").map(Field::Fixed32),
            w => return Err(bad(format!("wire type {w} of field {}", tag >> 3))),
        };
        out.push((tag >> 3, field.map_err(|e| bad(e.to_string()))?));
    }
    Ok(out)
}

/// A proto3 int32 / int64 stored as a varint (negative values are ten-byte two's complement).
fn signed(v: u64) -> i64 {
    v as i64
}

fn check_header(value: &[u8]) -> Result<()> {
    let (mut shards, mut endianness) = (0i64, 0i64);
    for (field, v) in fields(value, "the bundle header")? {
        match (field, v) {
            (1, Field::Varint(n)) => shards = signed(n),
            (2, Field::Varint(e)) => endianness = signed(e),
            _ => {}
        }
    }
    if shards != 1 {
        return Err(BundleError::Unsupported(format!(
            "{shards} shards (only single-shard bundles are read)"
        )));
    }
    if endianness != 0 {
        return Err(BundleError::Unsupported("big-endian data".into()));
    }
    Ok(())
}

fn parse_shape(msg: &[u8], what: &str) -> Result<Vec<u64>> {
    let mut dims = Vec::new();
    for (field, v) in fields(msg, what)? {
        match (field, v) {
            (2, Field::Bytes(dim)) => {
                let mut size = 0i64;
                for (f, v) in fields(dim, what)? {
                    if let (1, Field::Varint(n)) = (f, v) {
                        size = signed(n);
                    }
                }
                let size = u64::try_from(size).map_err(|_| BundleError::Proto {
                    what: what.to_string(),
                    reason: format!("dimension of size {size}"),
                })?;
                dims.push(size);
            }
            (3, Field::Varint(1)) => {
                return Err(BundleError::Unsupported(format!("{what}: unknown rank")))
            }
            _ => {}
        }
    }
    Ok(dims)
}

fn parse_entry(name: String, value: &[u8]) -> Result<Entry> {
    let what = format!("the entry of {name}");
    let mut e = Entry {
        name,
        dtype: 0,
        shape: Vec::new(),
        offset: 0,
        size: 0,
        crc32c: None,
    };
    let mut shard = 0i64;
    for (field, v) in fields(value, &what)? {
        match (field, v) {
            (1, Field::Varint(d)) => e.dtype = signed(d) as i32,
            (2, Field::Bytes(s)) => e.shape = parse_shape(s, &what)?,
            (3, Field::Varint(s)) => shard = signed(s),
            (4, Field::Varint(o)) => e.offset = o,
            (5, Field::Varint(s)) => e.size = s,
            (6, Field::Fixed32(c)) => e.crc32c = Some(crc32c::unmask(c)),
            (7, Field::Bytes(_)) => {
                return Err(BundleError::Unsupported(format!("{} is sliced", e.name)))
            }
            (1..=7, _) => {
                return Err(BundleError::Proto {
                    what,
                    reason: format!("field {field} has the wrong wire type"),
                })
            }
            _ => {}
        }
    }
    if shard != 0 {
        return Err(BundleError::Unsupported(format!(
            "{} is in shard {shard}",
            e.name
        )));
    }
    Ok(e)
}

/// The entries of a bundle index, sorted by name.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub entries: Vec<Entry>,
}

impl Bundle {
    /// Parses `variables.index`.
    pub fn parse(index: &[u8]) -> Result<Self> {
        let mut header = false;
        let mut entries = Vec::new();
        for (key, value) in sstable::entries(index)? {
            if key.is_empty() {
                check_header(&value)?;
                header = true;
                continue;
            }
            let name = String::from_utf8(key).map_err(|_| BundleError::Proto {
                what: "a tensor name".into(),
                reason: "not UTF-8".into(),
            })?;
            entries.push(parse_entry(name, &value)?);
        }
        if !header {
            return Err(BundleError::Unsupported("no header (empty key)".into()));
        }
        Ok(Self { entries })
    }

    #[cfg(test)]
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Every entry lies inside a data file of `len` bytes.
    pub fn check_range(&self, len: u64) -> Result<()> {
        for e in &self.entries {
            check_range(e, len)?;
        }
        Ok(())
    }
}

fn check_range(e: &Entry, len: u64) -> Result<()> {
    match e.end() {
        Some(end) if end <= len => Ok(()),
        end => Err(BundleError::OutOfRange {
            name: e.name.clone(),
            offset: e.offset,
            end: end.unwrap_or(u64::MAX),
            len,
        }),
    }
}

/// Reads tensors from a data file in one forward pass (a stream: a zip entry), skipping the
/// bytes of tensors not asked for; ask in increasing offset order.
pub struct DataReader<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read> DataReader<R> {
    /// `len`: the data file's size.
    pub fn new(inner: R, len: u64) -> Self {
        Self { inner, pos: 0, len }
    }

    /// The reader, positioned after the last tensor read.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The bytes of `e`, checked against the index's CRC-32C when it has one.
    pub fn read(&mut self, e: &Entry) -> Result<Vec<u8>> {
        check_range(e, self.len)?;
        if e.offset < self.pos {
            return Err(BundleError::Unsupported(format!(
                "{} starts at byte {}, before byte {} already read (read in offset order)",
                e.name, e.offset, self.pos
            )));
        }
        let gap = e.offset - self.pos;
        let skipped = std::io::copy(&mut (&mut self.inner).take(gap), &mut std::io::sink())?;
        self.pos += skipped;
        if skipped < gap {
            return Err(BundleError::Truncated {
                what: "the data file",
                offset: self.pos,
            });
        }
        let size = usize::try_from(e.size).map_err(|_| BundleError::Truncated {
            what: "the data file",
            offset: self.pos,
        })?;
        let mut buf = vec![0u8; size];
        self.inner
            .read_exact(&mut buf)
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::UnexpectedEof => BundleError::Truncated {
                    what: "the data file",
                    offset: self.pos,
                },
                _ => BundleError::Io(err),
            })?;
        self.pos += e.size;
        if let Some(stored) = e.crc32c {
            let computed = crc32c::value(&buf);
            if computed != stored {
                return Err(BundleError::Crc {
                    name: e.name.clone(),
                    stored,
                    computed,
                });
            }
        }
        Ok(buf)
    }
}

/// Hand-built bundles for tests: protobuf encoding of header and entries.
#[cfg(test)]
pub mod build {
    use super::super::sstable::build::{table, varint};
    use super::*;

    fn field_varint(field: u64, v: u64, out: &mut Vec<u8>) {
        varint(field << 3, out);
        varint(v, out);
    }

    fn field_bytes(field: u64, b: &[u8], out: &mut Vec<u8>) {
        varint((field << 3) | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    pub fn header() -> Vec<u8> {
        let mut h = Vec::new();
        field_varint(1, 1, &mut h); // num_shards
        field_bytes(3, &[8, 1], &mut h); // version { producer: 1 }
        h
    }

    pub fn entry(e: &Entry) -> Vec<u8> {
        let mut shape = Vec::new();
        for &d in &e.shape {
            let mut dim = Vec::new();
            field_varint(1, d, &mut dim);
            field_bytes(2, &dim, &mut shape);
        }
        let mut out = Vec::new();
        field_varint(1, e.dtype as u64, &mut out);
        field_bytes(2, &shape, &mut out);
        if e.offset > 0 {
            field_varint(4, e.offset, &mut out);
        }
        field_varint(5, e.size, &mut out);
        if let Some(c) = e.crc32c {
            varint((6 << 3) | 5, &mut out);
            out.extend_from_slice(&crc32c::mask(c).to_le_bytes());
        }
        out
    }

    /// (index file, data file) of f32 tensors given as (name, shape, values), in name order.
    pub fn bundle(tensors: &[(&str, Vec<u64>, Vec<f32>)]) -> (Vec<u8>, Vec<u8>) {
        let mut data = Vec::new();
        let mut values = Vec::new();
        for (name, shape, v) in tensors {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            let e = Entry {
                name: name.to_string(),
                dtype: DT_FLOAT,
                shape: shape.clone(),
                offset: data.len() as u64,
                size: bytes.len() as u64,
                crc32c: Some(crc32c::value(&bytes)),
            };
            data.extend_from_slice(&bytes);
            values.push((name.as_bytes().to_vec(), entry(&e)));
        }
        let head = header();
        let mut rows: Vec<(&[u8], &[u8])> = vec![(b"", &head)];
        rows.extend(values.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        (table(&rows, 2, 2), data)
    }
}

#[cfg(test)]
mod tests {
    use super::build;
    use super::*;

    fn sample() -> (Vec<u8>, Vec<u8>) {
        build::bundle(&[
            ("a/bias", vec![3], vec![1.0, 2.0, 3.0]),
            ("a/kernel", vec![2, 3], vec![0.5; 6]),
            ("b/gamma", vec![1], vec![-1.0]),
        ])
    }

    #[test]
    fn entries_and_tensors_read_back() -> Result<()> {
        let (index, data) = sample();
        let b = Bundle::parse(&index)?;
        assert_eq!(b.entries.len(), 3);
        let k = b.get("a/kernel").expect("a/kernel");
        assert_eq!(
            (k.dtype, k.shape.as_slice(), k.offset, k.size),
            (1, &[2, 3][..], 12, 24)
        );
        k.check_f32()?;
        b.check_range(data.len() as u64)?;
        let mut r = DataReader::new(data.as_slice(), data.len() as u64);
        // Skips a/bias, then reads in order.
        assert_eq!(r.read(k)?, data[12..36]);
        let g = r.read(b.get("b/gamma").expect("b/gamma"))?;
        assert_eq!(g, (-1.0f32).to_le_bytes());
        // Going back is refused.
        assert!(r.read(b.get("a/bias").expect("a/bias")).is_err());
        Ok(())
    }

    #[test]
    fn bad_files_give_typed_errors() -> Result<()> {
        let (index, data) = sample();
        let b = Bundle::parse(&index)?;
        let k = b.get("a/kernel").expect("a/kernel").clone();

        // A data file cut short of a tensor.
        let cut = &data[..20];
        let mut r = DataReader::new(cut, data.len() as u64);
        assert!(matches!(r.read(&k), Err(BundleError::Truncated { .. })));
        // An offset past the file.
        assert!(matches!(
            b.check_range(30),
            Err(BundleError::OutOfRange { .. })
        ));
        // A changed byte.
        let mut flipped = data.clone();
        flipped[13] ^= 1;
        let mut r = DataReader::new(flipped.as_slice(), data.len() as u64);
        assert!(matches!(r.read(&k), Err(BundleError::Crc { .. })));
        // Wrong dtype, wrong size.
        let mut int = k.clone();
        int.dtype = 9;
        assert!(matches!(
            int.check_f32(),
            Err(BundleError::Dtype { found: 9, .. })
        ));
        let mut short = k.clone();
        short.size = 20;
        assert!(matches!(short.check_f32(), Err(BundleError::Size { .. })));
        // A truncated index and a wrong magic number.
        assert!(matches!(
            Bundle::parse(&index[..index.len() - 1]),
            Err(BundleError::BadMagic { .. })
        ));
        assert!(Bundle::parse(&index[..30]).is_err());
        let mut magic = index.clone();
        let n = magic.len();
        magic[n - 8] = 0;
        assert!(matches!(
            Bundle::parse(&magic),
            Err(BundleError::BadMagic { .. })
        ));
        Ok(())
    }

    #[test]
    fn unsupported_layouts_are_refused() {
        use super::super::sstable::build::table;
        let mut two_shards = Vec::new();
        two_shards.extend_from_slice(&[8, 2]);
        let e = build::entry(&Entry {
            name: "x".into(),
            dtype: 1,
            shape: vec![1],
            offset: 0,
            size: 4,
            crc32c: None,
        });
        let rows: Vec<(&[u8], &[u8])> = vec![(b"", &two_shards), (b"x", &e)];
        assert!(matches!(
            Bundle::parse(&table(&rows, 4, 4)),
            Err(BundleError::Unsupported(_))
        ));
        let rows: Vec<(&[u8], &[u8])> = vec![(b"x", &e)];
        assert!(matches!(
            Bundle::parse(&table(&rows, 4, 4)),
            Err(BundleError::Unsupported(_))
        ));
        // A field with a group wire type.
        let head = build::header();
        let rows: Vec<(&[u8], &[u8])> = vec![(b"", &head), (b"x", &[0x0b, 0])];
        assert!(matches!(
            Bundle::parse(&table(&rows, 4, 4)),
            Err(BundleError::Proto { .. })
        ));
    }
}
