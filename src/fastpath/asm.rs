//! A small eBPF assembler (the loader is `crate::kernel::bpf`).
//!
//! The fast-path programs are a few dozen instructions; writing them here
//! keeps the build free of a BPF compiler and the binary free of object
//! files. Jumps take symbolic labels, resolved when the program is finished.

use std::collections::HashMap;

/// One `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

/// Registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(pub u8);
pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R5: Reg = Reg(5);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);
pub const R9: Reg = Reg(9);
pub const R10: Reg = Reg(10);

/// Load/store sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    B = 0x10,
    H = 0x08,
    W = 0x00,
    DW = 0x18,
}

const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const ALU64: u8 = 0x07;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const MEM: u8 = 0x60;
const K: u8 = 0x00;
const X: u8 = 0x08;

/// Jump conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    Eq = 0x10,
    Gt = 0x20,
    Ge = 0x30,
    Ne = 0x50,
    Lt = 0xa0,
    Le = 0xb0,
}

/// ALU operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alu {
    Add = 0x00,
    Sub = 0x10,
    Or = 0x40,
    And = 0x50,
    Lsh = 0x60,
    Mov = 0xb0,
}

/// Kernel helper ids (linux/bpf.h `__BPF_FUNC_MAPPER`).
pub mod helper {
    pub const SKB_STORE_BYTES: i32 = 9;
    pub const L3_CSUM_REPLACE: i32 = 10;
    pub const CLONE_REDIRECT: i32 = 13;
    pub const REDIRECT: i32 = 23;
    pub const FIB_LOOKUP: i32 = 69;
    /// Kernel 5.10 and later, tc ingress only, a veth's peer in another netns.
    pub const REDIRECT_PEER: i32 = 155;
}

/// A jump target: a name, or a name and a number for generated blocks
/// (`("pod", 3)`); `&'static str` converts to the name with number 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Label(pub &'static str, pub u32);

impl From<&'static str> for Label {
    fn from(name: &'static str) -> Label {
        Label(name, 0)
    }
}

impl From<(&'static str, u32)> for Label {
    fn from((name, n): (&'static str, u32)) -> Label {
        Label(name, n)
    }
}

/// A program being written.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: HashMap<Label, usize>,
    fixups: Vec<(usize, Label)>,
}

fn regs(dst: Reg, src: Reg) -> u8 {
    (src.0 << 4) | dst.0
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    fn push(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> &mut Self {
        self.insns.push(Insn {
            code,
            regs: regs(dst, src),
            off,
            imm,
        });
        self
    }

    /// Marks the next instruction with `name`.
    pub fn label(&mut self, name: impl Into<Label>) -> &mut Self {
        let at = self.insns.len();
        let name = name.into();
        assert!(
            self.labels.insert(name, at).is_none(),
            "label {name:?} defined twice"
        );
        self
    }

    /// `dst = *(size *)(src + off)`
    pub fn ldx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(LDX | MEM | size as u8, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`
    pub fn stx(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(STX | MEM | size as u8, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`
    pub fn st(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(ST | MEM | size as u8, dst, Reg(0), off, imm)
    }

    /// `dst op= imm` (64 bit)
    pub fn alu_k(&mut self, op: Alu, dst: Reg, imm: i32) -> &mut Self {
        self.push(ALU64 | K | op as u8, dst, Reg(0), 0, imm)
    }

    /// `dst op= src` (64 bit)
    pub fn alu_x(&mut self, op: Alu, dst: Reg, src: Reg) -> &mut Self {
        self.push(ALU64 | X | op as u8, dst, src, 0, 0)
    }

    pub fn mov_k(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.alu_k(Alu::Mov, dst, imm)
    }

    pub fn mov_x(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.alu_x(Alu::Mov, dst, src)
    }

    /// `if dst cond imm goto label`
    pub fn jmp_k(&mut self, cond: Cond, dst: Reg, imm: i32, label: impl Into<Label>) -> &mut Self {
        self.fixups.push((self.insns.len(), label.into()));
        self.push(JMP | K | cond as u8, dst, Reg(0), 0, imm)
    }

    /// `if (u32)dst cond (u32)imm goto label`: for 32-bit values whose top bit
    /// may be set (a 64-bit compare would sign-extend the immediate)
    pub fn jmp32_k(
        &mut self,
        cond: Cond,
        dst: Reg,
        imm: u32,
        label: impl Into<Label>,
    ) -> &mut Self {
        self.fixups.push((self.insns.len(), label.into()));
        self.push(JMP32 | K | cond as u8, dst, Reg(0), 0, imm as i32)
    }

    /// `if dst cond src goto label`
    pub fn jmp_x(&mut self, cond: Cond, dst: Reg, src: Reg, label: impl Into<Label>) -> &mut Self {
        self.fixups.push((self.insns.len(), label.into()));
        self.push(JMP | X | cond as u8, dst, src, 0, 0)
    }

    /// `goto label`
    pub fn ja(&mut self, label: impl Into<Label>) -> &mut Self {
        self.fixups.push((self.insns.len(), label.into()));
        self.push(JMP, Reg(0), Reg(0), 0, 0)
    }

    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.push(JMP | 0x80, Reg(0), Reg(0), 0, helper)
    }

    pub fn exit(&mut self) -> &mut Self {
        self.push(JMP | 0x90, Reg(0), Reg(0), 0, 0)
    }

    /// The instructions, jumps resolved.
    pub fn finish(&self) -> Vec<Insn> {
        let mut out = self.insns.clone();
        for (at, label) in &self.fixups {
            let to = *self
                .labels
                .get(label)
                .unwrap_or_else(|| panic!("label {label:?} not defined"));
            out[*at].off = (to as isize - *at as isize - 1) as i16;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_kernel_abi() {
        let mut a = Asm::new();
        a.mov_x(R6, R1) // bf 16
            .ldx(Size::W, R2, R6, 76) // 61 62 4c 00
            .st(Size::B, R10, -64, 2) // 72 0a c0 ff 02
            .jmp_k(Cond::Ne, R0, 0, "out") // 55 00 01 00
            .call(helper::FIB_LOOKUP) // 85 .. 45
            .label("out")
            .exit(); // 95
        let p = a.finish();
        assert_eq!(p[0].to_bytes(), [0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
        assert_eq!(p[1].to_bytes(), [0x61, 0x62, 0x4c, 0, 0, 0, 0, 0]);
        assert_eq!(p[2].to_bytes(), [0x72, 0x0a, 0xc0, 0xff, 2, 0, 0, 0]);
        assert_eq!(
            p[3].to_bytes(),
            [0x55, 0x00, 0x01, 0x00, 0, 0, 0, 0],
            "skips the call"
        );
        assert_eq!(p[4].to_bytes(), [0x85, 0, 0, 0, 69, 0, 0, 0]);
        assert_eq!(p[5].to_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    #[should_panic(expected = "not defined")]
    fn undefined_labels_are_caught() {
        let mut a = Asm::new();
        a.ja("nowhere");
        a.finish();
    }
}
