//! ParameterList: `pid(2) length(2) value(length)`, ending with PID_SENTINEL.

use super::wire::{Reader, Result};
use super::{Endian, ErrorKind, ParseError};

pub(crate) const PID_PAD: u16 = 0x0000;
pub(crate) const PID_SENTINEL: u16 = 0x0001;

/// One parameter of a ParameterList.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parameter<'a> {
    pub pid: u16,
    /// Offset of the parameter's id in the message.
    pub offset: usize,
    /// The value, including any padding the writer put in `length`.
    pub value: &'a [u8],
    /// Byte order of the list.
    pub endian: Endian,
}

impl Parameter<'_> {
    /// Bit 0x8000: meaning defined by the vendor of the message.
    pub fn is_vendor_specific(&self) -> bool {
        self.pid & 0x8000 != 0
    }

    /// Bit 0x4000: a receiver that does not know it must drop the sample.
    pub fn must_understand(&self) -> bool {
        self.pid & 0x4000 != 0
    }

    /// Offset of the value in the message.
    pub fn value_offset(&self) -> usize {
        self.offset.saturating_add(4)
    }

    pub(crate) fn reader(&self) -> Reader<'_> {
        Reader::new(self.value, self.value_offset(), self.endian)
    }

    pub(crate) fn bad_length(&self, expected: &'static str) -> ParseError {
        ParseError::new(
            self.offset,
            ErrorKind::BadParameterLength {
                pid: self.pid,
                len: self.value.len(),
                expected,
            },
        )
    }
}

/// Iterates over a ParameterList; yields an error (then stops) when the list
/// is malformed or has no sentinel. PID_PAD entries are skipped.
#[derive(Debug, Clone)]
pub struct ParameterIter<'a> {
    r: Reader<'a>,
    len: usize,
    base: usize,
    done: bool,
}

impl<'a> ParameterIter<'a> {
    /// `bytes` starts at the first parameter; `base` is its offset in the message.
    pub fn new(bytes: &'a [u8], base: usize, endian: Endian) -> ParameterIter<'a> {
        ParameterIter {
            r: Reader::new(bytes, base, endian),
            len: bytes.len(),
            base,
            done: false,
        }
    }

    /// Bytes consumed so far (through the sentinel's 4 bytes once the list
    /// is exhausted; the sentinel's length field is ignored, as the spec says).
    pub fn consumed(&self) -> usize {
        self.len - self.r.remaining()
    }

    /// Offset of the list in the message.
    pub fn base(&self) -> usize {
        self.base
    }
}

impl<'a> Iterator for ParameterIter<'a> {
    type Item = Result<Parameter<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let offset = self.r.offset();
            let head = self
                .r
                .u16("parameter id")
                .and_then(|pid| Ok((pid, self.r.u16("parameter length")?)));
            let (pid, len) = match head {
                Ok((pid, len)) => (pid, usize::from(len)),
                Err(_) => {
                    self.done = true;
                    return Some(Err(ParseError::new(offset, ErrorKind::MissingSentinel)));
                }
            };
            if pid == PID_SENTINEL {
                self.done = true;
                return None;
            }
            let have = self.r.remaining();
            let Ok(value) = self.r.take(len, "parameter value") else {
                self.done = true;
                return Some(Err(ParseError::new(
                    offset,
                    ErrorKind::ParameterOverrun { pid, len, have },
                )));
            };
            if pid == PID_PAD {
                continue;
            }
            return Some(Ok(Parameter {
                pid,
                offset,
                value,
                endian: self.r.endian,
            }));
        }
        None
    }
}

/// Length of a ParameterList through its sentinel.
pub(crate) fn list_len(bytes: &[u8], base: usize, endian: Endian) -> Result<usize> {
    let mut it = ParameterIter::new(bytes, base, endian);
    for p in it.by_ref() {
        p?;
    }
    Ok(it.consumed())
}

/// The largest value a parameter can hold (a multiple of 4 under 64 KiB).
pub(crate) const MAX_VALUE: usize = 65_532;

/// Appends one parameter, padding its value to a multiple of 4 (values
/// longer than [`MAX_VALUE`] are cut).
pub(crate) fn write_param(w: &mut super::wire::Writer<'_>, pid: u16, value: &[u8]) {
    let value = &value[..value.len().min(MAX_VALUE)];
    let padded = value.len().div_ceil(4) * 4;
    w.u16(pid);
    w.u16(padded as u16);
    w.bytes(value);
    w.bytes(&[0u8; 3][..padded - value.len()]);
}
