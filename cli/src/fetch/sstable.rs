//! LevelDB's table format as TensorFlow writes it for a tensor bundle's `variables.index`
//! (tensorflow/core/lib/io/table*): data blocks of prefix-compressed sorted keys with restart
//! points, each followed by a 5-byte trailer (compression type, masked CRC-32C); an index block
//! mapping each data block's last key to its handle; a 48-byte footer holding the metaindex and
//! index handles and the magic number. Only uncompressed blocks (what TensorFlow writes for
//! bundles) are read.
use super::crc32c;
use super::tf_bundle::BundleError as Error;

/// `kTableMagicNumber`, the footer's last 8 bytes (little-endian).
pub const MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// Two handles of at most 10 + 10 bytes, zero padding, the magic.
pub const FOOTER_LEN: usize = 48;
/// Compression type byte and masked CRC-32C after every block.
pub const TRAILER_LEN: usize = 5;

/// One (key, value) of a table.
pub type Record = (Vec<u8>, Vec<u8>);
/// One (key, value) of a block: the key rebuilt, the value borrowed from the block.
pub type BlockRecord<'a> = (Vec<u8>, &'a [u8]);

/// Reads LevelDB / protobuf encodings from a byte slice; errors name the absolute offset.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Cursor<'a> {
    /// `buf` starts at byte `base` of the file (for error messages).
    pub fn new(buf: &'a [u8], base: u64) -> Self {
        Self { buf, pos: 0, base }
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// A base-128 varint of at most 10 bytes (64 bits).
    pub fn varint(&mut self, what: &'static str) -> Result<u64, Error> {
        let start = self.offset();
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or(Error::Truncated {
                what,
                offset: start,
            })?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(Error::BadVarint { offset: start });
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Error::BadVarint { offset: start })
    }

    /// A varint that must fit 32 bits (LevelDB's `GetVarint32`).
    pub fn varint32(&mut self, what: &'static str) -> Result<u32, Error> {
        let offset = self.offset();
        let v = self.varint(what)?;
        u32::try_from(v).map_err(|_| Error::BadVarint { offset })
    }

    pub fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], Error> {
        let truncated = Error::Truncated {
            what,
            offset: self.offset(),
        };
        let n = usize::try_from(n).map_err(|_| truncated)?;
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(Error::Truncated {
            what,
            offset: self.offset(),
        })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn fixed32(&mut self, what: &'static str) -> Result<u32, Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn fixed64(&mut self, what: &'static str) -> Result<u64, Error> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Where a block lies in the file (its trailer follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle {
    pub offset: u64,
    pub size: u64,
}

impl Handle {
    fn read(c: &mut Cursor) -> Result<Self, Error> {
        Ok(Self {
            offset: c.varint("block handle")?,
            size: c.varint("block handle")?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub metaindex: Handle,
    pub index: Handle,
}

/// Decodes the footer (the file's last 48 bytes).
pub fn footer(file: &[u8]) -> Result<Footer, Error> {
    let start = file.len().checked_sub(FOOTER_LEN).ok_or(Error::Truncated {
        what: "table footer",
        offset: 0,
    })?;
    let mut c = Cursor::new(&file[start..], start as u64);
    let metaindex = Handle::read(&mut c)?;
    let index = Handle::read(&mut c)?;
    let mut magic = Cursor::new(&file[file.len() - 8..], (file.len() - 8) as u64);
    let found = magic.fixed64("table magic")?;
    if found != MAGIC {
        return Err(Error::BadMagic { found });
    }
    Ok(Footer { metaindex, index })
}

/// The contents of the block at `h`, its trailer checked (uncompressed, CRC-32C).
pub fn block(file: &[u8], h: Handle) -> Result<&[u8], Error> {
    let body_end = file.len().saturating_sub(FOOTER_LEN) as u64;
    let end = h
        .offset
        .checked_add(h.size)
        .and_then(|e| e.checked_add(TRAILER_LEN as u64));
    if end.is_none_or(|e| e > body_end) {
        return Err(Error::Truncated {
            what: "block",
            offset: h.offset,
        });
    }
    let (off, size) = (h.offset as usize, h.size as usize);
    let contents = &file[off..off + size];
    let kind = file[off + size];
    let mut t = Cursor::new(&file[off + size + 1..off + size + TRAILER_LEN], 0);
    let stored = crc32c::unmask(t.fixed32("block trailer")?);
    if kind != 0 {
        return Err(Error::Compressed {
            offset: h.offset,
            kind,
        });
    }
    let computed = crc32c::of_parts(&[contents, &[kind]]);
    if stored != computed {
        return Err(Error::BlockChecksum {
            offset: h.offset,
            stored,
            computed,
        });
    }
    Ok(contents)
}

fn bad_block(offset: u64, reason: impl Into<String>) -> Error {
    Error::BadBlock {
        offset,
        reason: reason.into(),
    }
}

/// Every (key, value) of one block, keys rebuilt from their shared prefixes; each restart point
/// must be the start of an entry that shares nothing with its predecessor.
pub fn block_entries(block: &[u8], base: u64) -> Result<Vec<BlockRecord<'_>>, Error> {
    if block.len() < 4 {
        return Err(Error::Truncated {
            what: "block restart count",
            offset: base,
        });
    }
    let n_at = block.len() - 4;
    let n = Cursor::new(&block[n_at..], base + n_at as u64).fixed32("block restart count")?;
    let restarts_at = (n as usize)
        .checked_mul(4)
        .and_then(|b| n_at.checked_sub(b))
        .ok_or_else(|| bad_block(base, format!("{n} restart points do not fit the block")))?;
    if n == 0 {
        return Err(bad_block(base, "no restart points"));
    }
    let mut rc = Cursor::new(&block[restarts_at..n_at], base + restarts_at as u64);
    let restarts: Vec<u32> = (0..n)
        .map(|_| rc.fixed32("restart point"))
        .collect::<Result<_, _>>()?;

    let mut c = Cursor::new(&block[..restarts_at], base);
    let mut out: Vec<BlockRecord> = Vec::new();
    let mut fresh = Vec::new(); // offsets of entries that share no prefix
    while !c.at_end() {
        let at = (c.offset() - base) as u32;
        let shared = c.varint32("block entry")? as usize;
        let non_shared = c.varint32("block entry")?;
        let value_len = c.varint32("block entry")?;
        let prev = out.last().map_or(&[][..], |(k, _)| k.as_slice());
        if shared > prev.len() {
            return Err(bad_block(
                base,
                format!(
                    "entry at {at} shares {shared} bytes of a {}-byte key",
                    prev.len()
                ),
            ));
        }
        let mut key = prev[..shared].to_vec();
        key.extend_from_slice(c.take(u64::from(non_shared), "block entry key")?);
        let value = c.take(u64::from(value_len), "block entry value")?;
        if shared == 0 {
            fresh.push(at);
        }
        out.push((key, value));
    }
    let empty_ok = out.is_empty() && restarts == [0];
    if !empty_ok {
        if restarts[0] != 0 {
            return Err(bad_block(base, "the first restart point is not 0"));
        }
        if let Some(r) = restarts.iter().find(|r| fresh.binary_search(r).is_err()) {
            return Err(bad_block(
                base,
                format!("restart point {r} is not an entry with an unshared key"),
            ));
        }
    }
    Ok(out)
}

/// Every (key, value) of the table in key order.
pub fn entries(file: &[u8]) -> Result<Vec<Record>, Error> {
    let f = footer(file)?;
    block(file, f.metaindex)?; // TensorFlow writes no filter: checked, not used
    let index = block(file, f.index)?;
    let mut out: Vec<Record> = Vec::new();
    for (_, value) in block_entries(index, f.index.offset)? {
        let mut c = Cursor::new(value, f.index.offset);
        let h = Handle::read(&mut c)?;
        if !c.at_end() {
            return Err(bad_block(
                f.index.offset,
                "index value longer than a block handle",
            ));
        }
        for (key, value) in block_entries(block(file, h)?, h.offset)? {
            if let Some((prev, _)) = out.last() {
                if *prev >= key {
                    return Err(Error::KeyOrder {
                        prev: String::from_utf8_lossy(prev).into_owned(),
                        key: String::from_utf8_lossy(&key).into_owned(),
                    });
                }
            }
            out.push((key, value.to_vec()));
        }
    }
    Ok(out)
}

/// Writes tables in the same format, for the tests of this reader and of the bundle reader.
#[cfg(test)]
pub mod build {
    use super::*;

    pub fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// One block, a restart point every `interval` entries.
    pub fn block(entries: &[(&[u8], &[u8])], interval: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut restarts = Vec::new();
        let mut prev: &[u8] = &[];
        for (i, (k, v)) in entries.iter().enumerate() {
            let shared = if i % interval == 0 {
                restarts.push(out.len() as u32);
                0
            } else {
                prev.iter()
                    .zip(k.iter())
                    .take_while(|(a, b)| a == b)
                    .count()
            };
            varint(shared as u64, &mut out);
            varint((k.len() - shared) as u64, &mut out);
            varint(v.len() as u64, &mut out);
            out.extend_from_slice(&k[shared..]);
            out.extend_from_slice(v);
            prev = k;
        }
        if restarts.is_empty() {
            restarts.push(0);
        }
        for r in &restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(restarts.len() as u32).to_le_bytes());
        out
    }

    fn push_block(file: &mut Vec<u8>, contents: &[u8]) -> Handle {
        let h = Handle {
            offset: file.len() as u64,
            size: contents.len() as u64,
        };
        file.extend_from_slice(contents);
        file.push(0);
        let crc = crc32c::of_parts(&[contents, &[0]]);
        file.extend_from_slice(&crc32c::mask(crc).to_le_bytes());
        h
    }

    /// A whole table: `entries` (sorted) cut into data blocks of `per_block` entries.
    pub fn table(entries: &[(&[u8], &[u8])], per_block: usize, interval: usize) -> Vec<u8> {
        let mut file = Vec::new();
        let mut index = Vec::new();
        for chunk in entries.chunks(per_block.max(1)) {
            let h = push_block(&mut file, &block(chunk, interval));
            let mut v = Vec::new();
            varint(h.offset, &mut v);
            varint(h.size, &mut v);
            index.push((chunk[chunk.len() - 1].0.to_vec(), v));
        }
        let meta = push_block(&mut file, &block(&[], 1));
        let idx: Vec<(&[u8], &[u8])> = index
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        let index_h = push_block(&mut file, &block(&idx, 1));
        let mut footer = Vec::new();
        for h in [meta, index_h] {
            varint(h.offset, &mut footer);
            varint(h.size, &mut footer);
        }
        footer.resize(FOOTER_LEN - 8, 0);
        footer.extend_from_slice(&MAGIC.to_le_bytes());
        file.extend_from_slice(&footer);
        file
    }
}

#[cfg(test)]
mod tests {
    use super::build;
    use super::*;

    #[test]
    fn varints_decode_and_reject_overlong_or_truncated() -> Result<(), Error> {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            build::varint(v, &mut b);
            let mut c = Cursor::new(&b, 0);
            assert_eq!(c.varint("test")?, v);
            assert!(c.at_end());
        }
        assert_eq!(Cursor::new(&[0xac, 0x02], 0).varint("t")?, 300);
        assert!(matches!(
            Cursor::new(&[0x80, 0x80], 7).varint("t"),
            Err(Error::Truncated { offset: 7, .. })
        ));
        let eleven = [0xffu8; 11];
        assert!(matches!(
            Cursor::new(&eleven, 0).varint("t"),
            Err(Error::BadVarint { .. })
        ));
        let mut big = Vec::new();
        build::varint(1 << 32, &mut big);
        assert!(matches!(
            Cursor::new(&big, 0).varint32("t"),
            Err(Error::BadVarint { .. })
        ));
        Ok(())
    }

    #[test]
    fn block_with_prefix_compressed_keys_and_restarts() -> Result<(), Error> {
        let keys: [&[u8]; 5] = [b"apple", b"applet", b"apply", b"banana", b"band"];
        let entries: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (*k, &k[..2])).collect();
        let b = build::block(&entries, 2);
        // "applet" after "apple" stores only its last byte: shared 5, non-shared 1, value 2.
        assert_eq!(&b[10..13], &[5, 1, 2]);
        let got = block_entries(&b, 0)?;
        assert_eq!(got.len(), 5);
        for ((k, v), want) in got.iter().zip(keys) {
            assert_eq!(k.as_slice(), want);
            assert_eq!(*v, &want[..2]);
        }
        // A restart point moved into the middle of an entry is refused.
        let mut moved = b.clone();
        let n_at = moved.len() - 4;
        moved[n_at - 4] += 1;
        assert!(matches!(
            block_entries(&moved, 0),
            Err(Error::BadBlock { .. })
        ));
        // An entry claiming more shared bytes than its predecessor has.
        let mut bad = b.clone();
        bad[10] = 9;
        assert!(block_entries(&bad, 0).is_err());
        // Cut off before the restart array: the count no longer fits.
        assert!(block_entries(&b[..3], 0).is_err());
        Ok(())
    }

    #[test]
    fn table_round_trips_and_checks_footer_and_trailers() -> Result<(), Error> {
        let names: Vec<Vec<u8>> = (0..23).map(|i| format!("k/{i:03}").into_bytes()).collect();
        let rows: Vec<(&[u8], &[u8])> = names.iter().map(|k| (k.as_slice(), &k[2..])).collect();
        let file = build::table(&rows, 5, 3);
        let got = entries(&file)?;
        assert_eq!(got.len(), 23);
        assert!(got
            .iter()
            .zip(&rows)
            .all(|((k, v), (wk, wv))| k == wk && v == wv));

        let mut magic = file.clone();
        let last = magic.len() - 1;
        magic[last] ^= 1;
        assert!(matches!(entries(&magic), Err(Error::BadMagic { .. })));

        assert!(matches!(entries(&file[..40]), Err(Error::Truncated { .. })));
        // Dropping bytes from the front moves every handle past its block.
        assert!(entries(&file[10..]).is_err());

        let mut flipped = file.clone();
        flipped[3] ^= 0x40; // inside the first data block
        assert!(matches!(
            entries(&flipped),
            Err(Error::BlockChecksum { offset: 0, .. })
        ));
        let mut compressed = file.clone();
        let first_len = build::block(&rows[..5], 3).len();
        compressed[first_len] = 1; // the type byte: snappy
        assert!(matches!(
            entries(&compressed),
            Err(Error::Compressed { kind: 1, .. })
        ));
        Ok(())
    }
}
