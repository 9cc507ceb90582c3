//! The character encoding of an import file: UTF-8, latin-1 or cp1252,
//! chosen with `--encoding` or detected, and a reader that turns the file
//! into UTF-8 as it streams (nothing is read whole).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use anyhow::Context;
use clap::ValueEnum;

use crate::domain::decode_cp1252_byte;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Bytes read from the file at a time.
const CHUNK_BYTES: usize = 64 * 1024;

/// `--encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EncodingArg {
    /// UTF-8, or cp1252 when the file is not UTF-8 (said on stderr).
    Auto,
    #[value(name = "utf-8", alias = "utf8")]
    Utf8,
    /// ISO-8859-1: each byte is the code point of the same number.
    #[value(name = "latin-1", alias = "latin1", alias = "iso-8859-1")]
    Latin1,
    /// Windows-1252: latin-1 with printable characters at 0x80..=0x9F.
    #[value(name = "cp1252", alias = "windows-1252")]
    Cp1252,
}

/// How the file's bytes are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Latin1,
    Cp1252,
}

impl Encoding {
    fn decode(self, byte: u8) -> char {
        match self {
            Encoding::Utf8 | Encoding::Latin1 => char::from(byte),
            Encoding::Cp1252 => decode_cp1252_byte(byte),
        }
    }
}

/// What a pass over the file found: invalid UTF-8 sequences, and
/// characters outside ASCII that were valid UTF-8.
#[derive(Debug, Default, PartialEq, Eq)]
struct Utf8Scan {
    invalid: u64,
    non_ascii: u64,
}

impl Utf8Scan {
    fn count_valid(&mut self, valid: &[u8]) {
        self.non_ascii += valid.iter().filter(|&&b| b >= 0xC0).count() as u64;
    }
}

/// Counts, in one streaming pass, the invalid UTF-8 sequences and the valid
/// non-ASCII characters of `reader`.
fn scan_utf8(mut reader: impl Read) -> io::Result<Utf8Scan> {
    let mut scan = Utf8Scan::default();
    let mut buffer = vec![0u8; CHUNK_BYTES];
    // Bytes of a sequence cut by the end of the previous chunk.
    let mut carried = 0;
    loop {
        let read = match reader.read(&mut buffer[carried..]) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let end = carried + read;
        let mut rest = &buffer[..end];
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    scan.count_valid(valid.as_bytes());
                    rest = &[];
                    break;
                }
                Err(error) => {
                    let (valid, after) = rest.split_at(error.valid_up_to());
                    scan.count_valid(valid);
                    match error.error_len() {
                        Some(len) => {
                            scan.invalid += 1;
                            rest = &after[len..];
                        }
                        // Cut by the end of the chunk: carried to the next.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        if read == 0 {
            // A sequence cut by the end of the file.
            scan.invalid += u64::from(!rest.is_empty());
            return Ok(scan);
        }
        carried = rest.len();
        buffer.copy_within(end - carried..end, 0);
    }
}

/// The encoding to read `file` with. `Auto`: a file with a UTF-8 BOM is
/// UTF-8; otherwise one pass over the file decides: valid UTF-8, or mostly
/// valid UTF-8 with a few broken sequences (those rows are rejected), is
/// UTF-8, anything else cp1252. Says on stderr when it is not UTF-8.
pub fn choose(file: &Path, wanted: EncodingArg) -> anyhow::Result<Encoding> {
    let context = || format!("cannot read {}", file.display());
    let encoding = match wanted {
        EncodingArg::Utf8 => Encoding::Utf8,
        EncodingArg::Latin1 => Encoding::Latin1,
        EncodingArg::Cp1252 => Encoding::Cp1252,
        EncodingArg::Auto => {
            let mut reader = BufReader::new(File::open(file).with_context(context)?);
            let head = reader.fill_buf().with_context(context)?;
            anyhow::ensure!(
                !(head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF")),
                "{} is UTF-16 (it starts with a UTF-16 byte order mark): save it as UTF-8",
                file.display()
            );
            if head.starts_with(UTF8_BOM) {
                return Ok(Encoding::Utf8);
            }
            let scan = scan_utf8(reader).with_context(context)?;
            if scan.invalid == 0 {
                Encoding::Utf8
            } else if scan.non_ascii >= scan.invalid {
                eprintln!(
                    "warning: {} invalid UTF-8 sequences in a UTF-8 file: their rows are rejected; pass --encoding cp1252 to read the file as cp1252",
                    scan.invalid
                );
                Encoding::Utf8
            } else {
                eprintln!("not UTF-8: read as cp1252; pass --encoding to choose");
                Encoding::Cp1252
            }
        }
    };
    Ok(encoding)
}

/// The file as UTF-8, a leading UTF-8 BOM skipped (whatever the encoding:
/// a BOM is never text).
pub fn open(file: &Path, encoding: Encoding) -> anyhow::Result<Box<dyn Read + Send>> {
    let context = || format!("cannot open {}", file.display());
    let mut reader = BufReader::with_capacity(CHUNK_BYTES, File::open(file).with_context(context)?);
    if reader
        .fill_buf()
        .with_context(context)?
        .starts_with(UTF8_BOM)
    {
        reader.consume(UTF8_BOM.len());
    }
    Ok(match encoding {
        Encoding::Utf8 => Box::new(reader),
        Encoding::Latin1 | Encoding::Cp1252 => Box::new(SingleByteDecoder {
            inner: reader,
            encoding,
            decoded: Vec::with_capacity(2 * CHUNK_BYTES),
            at: 0,
        }),
    })
}

/// Reads a single-byte encoding as UTF-8, a chunk at a time.
struct SingleByteDecoder<R> {
    inner: R,
    encoding: Encoding,
    /// UTF-8 of the last chunk, and how much of it was handed out.
    decoded: Vec<u8>,
    at: usize,
}

impl<R: BufRead> Read for SingleByteDecoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.decoded.len() {
            self.decoded.clear();
            self.at = 0;
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                return Ok(0);
            }
            let mut utf8 = [0u8; 4];
            for &byte in chunk {
                if byte.is_ascii() {
                    self.decoded.push(byte);
                } else {
                    let c = self.encoding.decode(byte);
                    self.decoded
                        .extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
            }
            let len = chunk.len();
            self.inner.consume(len);
        }
        let take = out.len().min(self.decoded.len() - self.at);
        out[..take].copy_from_slice(&self.decoded[self.at..self.at + take]);
        self.at += take;
        Ok(take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_as(contents: &[u8], wanted: EncodingArg) -> (Encoding, String) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("input");
        std::fs::write(&file, contents).unwrap();
        let encoding = choose(&file, wanted).unwrap();
        let mut bytes = Vec::new();
        open(&file, encoding)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        (encoding, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[test]
    fn auto_reads_utf8_as_utf8_and_anything_else_as_cp1252() {
        assert_eq!(
            read_as("café – très bien\r\n".as_bytes(), EncodingArg::Auto),
            (Encoding::Utf8, "café – très bien\r\n".into())
        );
        assert_eq!(
            read_as(b"caf\xE9 \x96 tr\xE8s bien\r\n", EncodingArg::Auto),
            (Encoding::Cp1252, "café – très bien\r\n".into())
        );
        // A BOM says UTF-8 and is skipped.
        assert_eq!(
            read_as(b"\xEF\xBB\xBFcaf\xC3\xA9", EncodingArg::Auto),
            (Encoding::Utf8, "café".into())
        );
        // Mostly UTF-8 with one broken byte: UTF-8 (that row is rejected).
        let mut mostly_utf8 = "é è à ".as_bytes().to_vec();
        mostly_utf8.push(0xFF);
        assert_eq!(read_as(&mostly_utf8, EncodingArg::Auto).0, Encoding::Utf8);
    }

    #[test]
    fn a_utf16_file_is_refused_in_auto_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("input");
        std::fs::write(&file, b"\xFF\xFEt\0e\0x\0t\0").unwrap();
        let error = choose(&file, EncodingArg::Auto).unwrap_err().to_string();
        assert!(error.contains("UTF-16"), "{error}");
    }

    #[test]
    fn latin1_and_cp1252_differ_only_at_0x80_to_0x9f() {
        let bytes = b"\xEF\xBB\xBFna\xEFve \x96 \x80 \x81 \xFF";
        assert_eq!(read_as(bytes, EncodingArg::Cp1252).1, "naïve – € \u{81} ÿ");
        assert_eq!(
            read_as(bytes, EncodingArg::Latin1).1,
            "naïve \u{96} \u{80} \u{81} ÿ"
        );
    }

    /// Sequences cut by the scan's chunk boundaries still count once.
    #[test]
    fn the_scan_counts_across_chunk_boundaries() {
        let mut bytes = vec![b'a'; CHUNK_BYTES - 1];
        bytes.extend("é".as_bytes()); // cut after its first byte
        bytes.extend([0xE9, b' ', 0xC3]); // cp1252 é, then a sequence the end cuts
        assert_eq!(
            scan_utf8(bytes.as_slice()).unwrap(),
            Utf8Scan {
                invalid: 2,
                non_ascii: 1
            }
        );
        let big: Vec<u8> = "€".repeat(CHUNK_BYTES).into_bytes();
        assert_eq!(
            scan_utf8(big.as_slice()).unwrap(),
            Utf8Scan {
                invalid: 0,
                non_ascii: CHUNK_BYTES as u64
            }
        );
    }

    #[test]
    fn the_decoder_streams_large_files() {
        let bytes = b"\xE9".repeat(3 * CHUNK_BYTES + 7);
        let (encoding, text) = read_as(&bytes, EncodingArg::Auto);
        assert_eq!(encoding, Encoding::Cp1252);
        assert_eq!(text.chars().count(), bytes.len());
        assert!(text.chars().all(|c| c == 'é'));
    }
}

/// Fuzz targets of the encoding layer (`cargo test --lib fuzz`): any bytes
/// are read as UTF-8 without a panic, a valid UTF-8 file unchanged, and the
/// streaming scan and decoder agree with whole-file answers whatever the
/// sizes of the reads.
#[cfg(test)]
pub(super) mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzz::{long_string, nasty_string};

    /// Hands out its bytes in reads of the given sizes (in turn), like a pipe.
    struct Chunked<'a> {
        bytes: &'a [u8],
        sizes: Vec<usize>,
        turn: usize,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes[self.turn % self.sizes.len()]
                .min(out.len())
                .min(self.bytes.len());
            self.turn += 1;
            out[..size].copy_from_slice(&self.bytes[..size]);
            self.bytes = &self.bytes[size..];
            Ok(size)
        }
    }

    /// Bytes of all kinds: random, UTF-8 (some broken), cp1252 text, with
    /// or without a byte order mark, now and then past a read chunk.
    pub(crate) fn file_bytes() -> impl Strategy<Value = Vec<u8>> {
        let single_byte = prop::collection::vec(
            prop_oneof![4 => 0x20u8..0x7f, 2 => 0x80u8..=0xff, 1 => Just(b'\n'), 1 => Just(b'\r')],
            0..200,
        );
        let broken_utf8 = (
            nasty_string(80),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        )
            .prop_map(|(text, edits)| {
                let mut bytes = text.into_bytes();
                for (at, byte) in edits {
                    if !bytes.is_empty() {
                        let at = at.index(bytes.len());
                        bytes[at] = byte;
                    }
                }
                bytes
            });
        let body = prop_oneof![
            2 => prop::collection::vec(any::<u8>(), 0..200),
            3 => nasty_string(120).prop_map(String::into_bytes),
            2 => broken_utf8,
            2 => single_byte,
            1 => (0usize..8, prop::collection::vec(any::<u8>(), 0..8)).prop_map(|(short, tail)| {
                let mut bytes = "\u{e9}".repeat((CHUNK_BYTES - short) / 2).into_bytes();
                bytes.extend(tail);
                bytes
            }),
        ];
        let bom: &[&[u8]] = &[
            b"",
            b"",
            b"",
            UTF8_BOM,
            b"\xFF\xFE",
            b"\xFE\xFF",
            b"\xEF\xBB",
        ];
        (prop::sample::select(bom), body).prop_map(|(bom, body)| [bom, &body[..]].concat())
    }

    fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
        prop_oneof![
            prop::collection::vec(1usize..8, 1..5),
            Just(vec![CHUNK_BYTES]),
            Just(vec![1]),
        ]
    }

    fn write(contents: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let file = dir.path().join("input");
        std::fs::write(&file, contents).expect("written");
        (dir, file)
    }

    fn without_bom(bytes: &[u8]) -> &[u8] {
        bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes)
    }

    proptest! {
        #[test]
        fn fuzz_the_scan_counts_as_the_standard_library(
            bytes in file_bytes(),
            sizes in read_sizes(),
        ) {
            let mut expected = Utf8Scan::default();
            for chunk in bytes.utf8_chunks() {
                expected.non_ascii += chunk.valid().chars().filter(|c| !c.is_ascii()).count() as u64;
                expected.invalid += u64::from(!chunk.invalid().is_empty());
            }
            let scan = scan_utf8(Chunked { bytes: &bytes, sizes, turn: 0 }).unwrap();
            prop_assert_eq!(scan, expected);
        }

        #[test]
        fn fuzz_auto_reads_valid_utf8_unchanged(
            text in prop_oneof![4 => nasty_string(200), 1 => long_string(CHUNK_BYTES - 4, CHUNK_BYTES + 4)],
            bom in any::<bool>(),
        ) {
            let contents = if bom { format!("\u{feff}{text}") } else { text.clone() };
            let (_dir, file) = write(contents.as_bytes());
            prop_assert_eq!(choose(&file, EncodingArg::Auto).unwrap(), Encoding::Utf8);
            let mut read = Vec::new();
            open(&file, Encoding::Utf8).unwrap().read_to_end(&mut read).unwrap();
            prop_assert_eq!(read, without_bom(contents.as_bytes()));
        }

        #[test]
        fn fuzz_any_file_reads_as_utf8(
            bytes in file_bytes(),
            wanted in prop::sample::select(vec![
                EncodingArg::Auto,
                EncodingArg::Utf8,
                EncodingArg::Latin1,
                EncodingArg::Cp1252,
            ]),
        ) {
            let (_dir, file) = write(&bytes);
            let encoding = match choose(&file, wanted) {
                Ok(encoding) => encoding,
                Err(error) => {
                    prop_assert!(wanted == EncodingArg::Auto, "{error}");
                    prop_assert!(bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF"));
                    prop_assert!(error.to_string().contains("UTF-16"));
                    return Ok(());
                }
            };
            if wanted == EncodingArg::Auto && std::str::from_utf8(&bytes).is_ok() {
                prop_assert_eq!(encoding, Encoding::Utf8);
            }
            let mut read = Vec::new();
            open(&file, encoding).unwrap().read_to_end(&mut read).unwrap();
            let body = without_bom(&bytes);
            match encoding {
                Encoding::Utf8 => prop_assert_eq!(&read[..], body),
                Encoding::Latin1 | Encoding::Cp1252 => {
                    let text = String::from_utf8(read).expect("decoded to UTF-8");
                    let expected: String = body.iter().map(|&b| encoding.decode(b)).collect();
                    prop_assert_eq!(text, expected);
                }
            }
        }

        #[test]
        fn fuzz_the_decoder_streams_like_the_whole_file(
            bytes in file_bytes(),
            capacity in 1usize..16,
            out_sizes in prop::collection::vec(1usize..9, 1..4),
            cp1252 in any::<bool>(),
        ) {
            let encoding = if cp1252 { Encoding::Cp1252 } else { Encoding::Latin1 };
            let mut decoder = SingleByteDecoder {
                inner: BufReader::with_capacity(capacity, &bytes[..]),
                encoding,
                decoded: Vec::new(),
                at: 0,
            };
            let mut read = Vec::new();
            let mut buffer = [0u8; 8];
            for turn in 0.. {
                let size = out_sizes[turn % out_sizes.len()];
                match decoder.read(&mut buffer[..size]).unwrap() {
                    0 => break,
                    n => read.extend_from_slice(&buffer[..n]),
                }
            }
            let expected: String = bytes.iter().map(|&b| encoding.decode(b)).collect();
            prop_assert_eq!(String::from_utf8(read).expect("UTF-8"), expected);
        }
    }
}
