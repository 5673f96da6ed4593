//! Bounds-checked reading and plain writing of RTPS/CDR primitives.

use super::{Endian, ErrorKind, ParseError};

/// A cursor over a slice that knows its absolute offset in the message.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    pub endian: Endian,
}

pub(crate) type Result<T> = std::result::Result<T, ParseError>;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], base: usize, endian: Endian) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            base,
            endian,
        }
    }

    /// Absolute offset of the next byte.
    pub fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn truncated(&self, what: &'static str, need: usize) -> ParseError {
        ParseError::new(
            self.offset(),
            ErrorKind::Truncated {
                what,
                need,
                have: self.remaining(),
            },
        )
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.truncated(what, n));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16> {
        let a = self.array::<2>(what)?;
        Ok(match self.endian {
            Endian::Little => u16::from_le_bytes(a),
            Endian::Big => u16::from_be_bytes(a),
        })
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32> {
        let a = self.array::<4>(what)?;
        Ok(match self.endian {
            Endian::Little => u32::from_le_bytes(a),
            Endian::Big => u32::from_be_bytes(a),
        })
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32> {
        Ok(self.u32(what)? as i32)
    }

    /// SequenceNumber_t: high i32, low u32.
    pub fn sequence_number(&mut self, what: &'static str) -> Result<i64> {
        let high = self.i32(what)?;
        let low = self.u32(what)?;
        Ok((i64::from(high) << 32) | i64::from(low))
    }

    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<()> {
        self.take(n, what).map(|_| ())
    }
}

/// Appends primitives in one byte order.
#[derive(Debug)]
pub(crate) struct Writer<'b> {
    pub buf: &'b mut Vec<u8>,
    pub endian: Endian,
}

impl Writer<'_> {
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    pub fn u16(&mut self, v: u16) {
        match self.endian {
            Endian::Little => self.bytes(&v.to_le_bytes()),
            Endian::Big => self.bytes(&v.to_be_bytes()),
        }
    }

    pub fn u32(&mut self, v: u32) {
        match self.endian {
            Endian::Little => self.bytes(&v.to_le_bytes()),
            Endian::Big => self.bytes(&v.to_be_bytes()),
        }
    }

    pub fn i32(&mut self, v: i32) {
        self.u32(v as u32)
    }

    pub fn sequence_number(&mut self, v: i64) {
        self.i32((v >> 32) as i32);
        self.u32(v as u32);
    }
}
