//! A minimal nf_tables netlink encoder/decoder.
//!
//! Enough of the nf_tables wire format (linux/netfilter/nf_tables.h) to create
//! a table, sets, base chains and rules made of the expressions we use (meta,
//! payload, cmp, lookup, immediate, counter), to add and delete set elements,
//! and to dump rules and set elements back. It needs no `nft` binary, so the
//! plugin on the host and the agent in a `FROM scratch` image both work, and a
//! per-pod element costs one netlink round trip instead of a process spawn.

use crate::kernel::netlink::{Conn, Wire};
use crate::kernel::Result;
use netlink_packet_core::{
    DecodeError, NetlinkDeserializable, NetlinkHeader, NetlinkSerializable, NLA_F_NESTED,
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;

pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_BRIDGE: u8 = 7;

#[allow(dead_code)]
mod msg {
    pub const NEWTABLE: u16 = 0;
    pub const GETTABLE: u16 = 1;
    pub const DELTABLE: u16 = 2;
    pub const NEWCHAIN: u16 = 3;
    pub const DELCHAIN: u16 = 5;
    pub const NEWRULE: u16 = 6;
    pub const GETRULE: u16 = 7;
    pub const DELRULE: u16 = 8;
    pub const NEWSET: u16 = 9;
    pub const GETSET: u16 = 10;
    pub const NEWSETELEM: u16 = 12;
    pub const GETSETELEM: u16 = 13;
    pub const DELSETELEM: u16 = 14;
}

/// Netfilter hooks (same numbers for ip and bridge families).
pub const NF_INET_PRE_ROUTING: u32 = 0;
pub const NF_INET_FORWARD: u32 = 2;

pub const NF_DROP: i32 = 0;
pub const NF_ACCEPT: i32 = 1;
pub const NFT_JUMP: i32 = -3;
pub const NFT_GOTO: i32 = -4;
pub const NFT_RETURN: i32 = -5;

/// nft datatype ids (nftables' datatype.h), only for how `nft list` prints keys.
pub const TYPE_IPADDR: u32 = 7;
pub const TYPE_INET_SERVICE: u32 = 13;
pub const TYPE_ETHERADDR: u32 = 9;
pub const TYPE_IFNAME: u32 = 41;

/// Concatenated key type as nft computes it.
pub fn concat_type(types: &[u32]) -> u32 {
    types.iter().fold(0, |acc, t| (acc << 6) | t)
}

/// 32-bit registers (NFT_REG32_00 = 8).
pub const REG32_00: u32 = 8;
pub const REG_VERDICT: u32 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    Link = 0,
    Network = 1,
    Transport = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    Protocol = 1,
    IifName = 6,
    OifName = 7,
}

/// One rule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta {
        key: MetaKey,
        dreg: u32,
    },
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// Write `len` bytes from `sreg` into the packet, fixing the inet checksum at `csum_offset`.
    PayloadWrite {
        base: PayloadBase,
        offset: u32,
        len: u32,
        sreg: u32,
        csum_offset: u32,
    },
    CmpEq {
        sreg: u32,
        data: Vec<u8>,
    },
    Lookup {
        sreg: u32,
        set: String,
    },
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    Verdict {
        code: i32,
        chain: Option<String>,
    },
    Counter,
    /// `REG in FROM-TO` (or, with `neq`, not in it): compared as bytes, so
    /// big-endian values (ports) compare as numbers.
    Range {
        sreg: u32,
        from: Vec<u8>,
        to: Vec<u8>,
        neq: bool,
    },
    /// `limit rate [over] RATE/UNIT burst BURST packets`: with `over`, the
    /// rule goes on only for packets beyond the rate (the usual "drop the
    /// excess"); without, only for packets within it. A token bucket of
    /// `burst` packets refilled at `rate` per `unit_seconds`.
    Limit {
        rate: u64,
        unit_seconds: u64,
        burst: u32,
        over: bool,
    },
    /// `update @set { KEY EXPR }`: the key in `sreg` is added to (or
    /// refreshed in) the dynamic set `set`, and the element's own copy of
    /// `expr` (stateful: a limit) is evaluated; the rule goes on only if it
    /// matches.
    DynsetUpdate {
        set: String,
        sreg: u32,
        expr: Box<Expr>,
    },
    /// `dup to ADDR device DEV` (ip family, nft_dup_ipv4): a copy of the
    /// packet is routed to the address in `addr_reg` out of the interface
    /// whose index is in `dev_reg` (native byte order), the original goes on.
    Dup {
        addr_reg: u32,
        dev_reg: u32,
    },
}

/// Builds netlink attributes into a byte buffer.
#[derive(Default)]
struct Attrs {
    b: Vec<u8>,
    open: Vec<usize>,
}

impl Attrs {
    fn pad(&mut self) {
        while !self.b.len().is_multiple_of(4) {
            self.b.push(0);
        }
    }

    fn put(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.b.extend_from_slice(&(len as u16).to_ne_bytes());
        self.b.extend_from_slice(&ty.to_ne_bytes());
        self.b.extend_from_slice(data);
        self.pad();
        self
    }

    fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(ty, &v)
    }

    fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }

    fn begin(&mut self, ty: u16) -> &mut Self {
        self.open.push(self.b.len());
        self.b.extend_from_slice(&[0, 0]);
        self.b.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        let start = self.open.pop().expect("balanced nesting");
        let len = (self.b.len() - start) as u16;
        self.b[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// NFTA_DATA_VALUE inside a nest of type `ty`.
    fn data_value(&mut self, ty: u16, v: &[u8]) -> &mut Self {
        self.begin(ty).put(1, v).end()
    }
}

fn encode_expr(a: &mut Attrs, e: &Expr) {
    a.begin(1); // NFTA_LIST_ELEM
    encode_expr_body(a, e);
    a.end(); // LIST_ELEM
}

/// NFTA_EXPR_NAME and NFTA_EXPR_DATA of one expression.
fn encode_expr_body(a: &mut Attrs, e: &Expr) {
    let name = match e {
        Expr::Meta { .. } => "meta",
        Expr::Payload { .. } | Expr::PayloadWrite { .. } => "payload",
        Expr::CmpEq { .. } => "cmp",
        Expr::Lookup { .. } => "lookup",
        Expr::Immediate { .. } | Expr::Verdict { .. } => "immediate",
        Expr::Counter => "counter",
        Expr::Range { .. } => "range",
        Expr::Limit { .. } => "limit",
        Expr::DynsetUpdate { .. } => "dynset",
        Expr::Dup { .. } => "dup",
    };
    a.str(1, name); // NFTA_EXPR_NAME
    a.begin(2); // NFTA_EXPR_DATA
    match e {
        Expr::Meta { key, dreg } => {
            a.be32(1, *dreg).be32(2, *key as u32);
        }
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            a.be32(1, *dreg)
                .be32(2, *base as u32)
                .be32(3, *offset)
                .be32(4, *len);
        }
        Expr::PayloadWrite {
            base,
            offset,
            len,
            sreg,
            csum_offset,
        } => {
            a.be32(2, *base as u32)
                .be32(3, *offset)
                .be32(4, *len)
                .be32(5, *sreg)
                .be32(6, 1) // NFT_PAYLOAD_CSUM_INET
                .be32(7, *csum_offset);
        }
        Expr::CmpEq { sreg, data } => {
            a.be32(1, *sreg).be32(2, 0).data_value(3, data);
        }
        Expr::Lookup { sreg, set } => {
            a.str(1, set).be32(2, *sreg);
        }
        Expr::Immediate { dreg, data } => {
            a.be32(1, *dreg).data_value(2, data);
        }
        Expr::Verdict { code, chain } => {
            a.be32(1, REG_VERDICT);
            a.begin(2).begin(2); // NFTA_IMMEDIATE_DATA { NFTA_DATA_VERDICT {
            a.be32(1, *code as u32);
            if let Some(c) = chain {
                a.str(2, c);
            }
            a.end().end();
        }
        Expr::Counter => {
            a.put(1, &0u64.to_be_bytes()).put(2, &0u64.to_be_bytes());
        }
        Expr::Range {
            sreg,
            from,
            to,
            neq,
        } => {
            // NFTA_RANGE_SREG, _OP (NFT_RANGE_EQ/NEQ), _FROM_DATA, _TO_DATA
            a.be32(1, *sreg)
                .be32(2, u32::from(*neq))
                .data_value(3, from)
                .data_value(4, to);
        }
        Expr::Limit {
            rate,
            unit_seconds,
            burst,
            over,
        } => {
            // NFTA_LIMIT_RATE, _UNIT (u64), _BURST, _TYPE (NFT_LIMIT_PKTS), _FLAGS (NFT_LIMIT_F_INV)
            a.put(1, &rate.to_be_bytes())
                .put(2, &unit_seconds.to_be_bytes())
                .be32(3, *burst)
                .be32(4, 0)
                .be32(5, u32::from(*over));
        }
        Expr::DynsetUpdate { set, sreg, expr } => {
            // NFTA_DYNSET_SET_NAME, _OP (NFT_DYNSET_OP_UPDATE), _SREG_KEY, _EXPR
            a.str(1, set).be32(3, 1).be32(4, *sreg);
            a.begin(7);
            encode_expr_body(a, expr);
            a.end();
        }
        Expr::Dup { addr_reg, dev_reg } => {
            // NFTA_DUP_SREG_ADDR, NFTA_DUP_SREG_DEV
            a.be32(1, *addr_reg).be32(2, *dev_reg);
        }
    }
    a.end(); // EXPR_DATA
}

/// A table, its sets, chains and rules, applied in one transaction.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub family: u8,
    pub name: String,
    pub sets: Vec<SetSpec>,
    pub chains: Vec<ChainSpec>,
}

#[derive(Debug, Clone)]
pub struct SetSpec {
    pub name: String,
    pub key_type: u32,
    pub key_len: u32,
    /// A set the rules fill themselves (`dynset`, as nft's `update @set`),
    /// with elements expiring after this many milliseconds without a
    /// packet. None: a plain set the agent fills.
    pub dynamic_timeout_ms: Option<u64>,
}

/// Elements a dynamic set holds at most.
const DYNAMIC_SET_SIZE: u32 = 65535;

#[derive(Debug, Clone)]
pub struct ChainSpec {
    pub name: String,
    /// (hook, priority) for a base chain of type filter with policy accept.
    pub hook: Option<(u32, i32)>,
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone)]
pub struct RuleSpec {
    /// Shown by `nft list` as the rule's comment; also how we recognise our rules.
    pub comment: String,
    pub exprs: Vec<Expr>,
}

/// One change of [`Nfnl::edit`].
#[derive(Debug, Clone)]
pub enum Edit {
    DeleteRule { chain: String, handle: u64 },
    AppendRule { chain: String, rule: RuleSpec },
    AddElements { set: String, keys: Vec<Vec<u8>> },
    DeleteElements { set: String, keys: Vec<Vec<u8>> },
}

/// A rule as dumped back: its chain, comment and counter (packets, bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedRule {
    pub chain: String,
    /// The kernel's handle of the rule (to delete just this one).
    pub handle: u64,
    pub comment: Option<String>,
    pub counter: Option<(u64, u64)>,
}

/// The (packets, bytes) of the first counter expression in a rule's expression list.
fn parse_counter(exprs: &[u8]) -> Option<(u64, u64)> {
    for (_, elem) in attrs(exprs) {
        let mut name = String::new();
        let mut data: &[u8] = &[];
        for (t, p) in attrs(elem) {
            match t {
                1 => name = cstr(p),
                2 => data = p,
                _ => {}
            }
        }
        if name == "counter" {
            let (mut bytes, mut packets) = (0, 0);
            for (t, p) in attrs(data) {
                let v = p
                    .get(..8)
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap()));
                match (t, v) {
                    (1, Some(v)) => bytes = v,
                    (2, Some(v)) => packets = v,
                    _ => {}
                }
            }
            return Some((packets, bytes));
        }
    }
    None
}

/// A NETLINK_NETFILTER socket in the calling thread's namespace (or, in
/// unit tests, a fake wire).
pub struct Nfnl<W = Socket> {
    conn: Conn<W>,
}

/// One nfnetlink message of nf_tables: the type (subsystem and message),
/// the `nfgenmsg` header (family, resource id) and the attributes. Framed by
/// the kernel transport, so it is only the payload.
struct Message {
    ty: u16,
    /// NLM_F_* of the request (the header is the transport's).
    flags: u16,
    family: u8,
    res_id: u16,
    attrs: Attrs,
}

/// sizeof(struct nfgenmsg)
const NFGENMSG_LEN: usize = 4;

impl Message {
    fn new(m: u16, flags: u16, family: u8) -> Message {
        Message {
            ty: (NFNL_SUBSYS_NFTABLES << 8) | m,
            flags,
            family,
            res_id: 0,
            attrs: Attrs::default(),
        }
    }

    /// NFNL_MSG_BATCH_BEGIN or _END of an nf_tables transaction.
    fn batch_marker(ty: u16) -> Message {
        Message {
            ty,
            flags: 0,
            family: 0,
            res_id: NFNL_SUBSYS_NFTABLES,
            attrs: Attrs::default(),
        }
    }

    /// The nf_tables message (NFT_MSG_*) of an answer.
    fn nft_msg(&self) -> u16 {
        self.ty & 0xff
    }
}

impl NetlinkSerializable for Message {
    fn message_type(&self) -> u16 {
        self.ty
    }

    fn buffer_len(&self) -> usize {
        NFGENMSG_LEN + self.attrs.b.len()
    }

    fn serialize(&self, out: &mut [u8]) {
        out[0] = self.family;
        out[1] = 0; // NFNETLINK_V0
        out[2..4].copy_from_slice(&self.res_id.to_be_bytes());
        out[NFGENMSG_LEN..].copy_from_slice(&self.attrs.b);
    }
}

impl NetlinkDeserializable for Message {
    type Error = DecodeError;

    fn deserialize(
        header: &NetlinkHeader,
        payload: &[u8],
    ) -> std::result::Result<Self, DecodeError> {
        if payload.len() < NFGENMSG_LEN {
            return Err(DecodeError::from(format!(
                "nfnetlink message of {} bytes has no nfgenmsg header",
                payload.len()
            )));
        }
        Ok(Message {
            ty: header.message_type,
            flags: header.flags,
            family: payload[0],
            res_id: u16::from_be_bytes([payload[2], payload[3]]),
            attrs: Attrs {
                b: payload[NFGENMSG_LEN..].to_vec(),
                open: vec![],
            },
        })
    }
}

/// Iterates the attributes in `b` as (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        let adv = ((len + 3) & !3).min(b.len());
        b = &b[adv..];
        Some((ty, payload))
    })
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// nftnl user data: TLVs of (type u8, len u8, value); type 0 is the comment.
fn comment_udata(c: &str) -> Vec<u8> {
    let mut v = c.as_bytes().to_vec();
    v.push(0);
    v.truncate(255);
    let mut out = vec![0u8, v.len() as u8];
    out.extend_from_slice(&v);
    out
}

fn parse_comment(udata: &[u8]) -> Option<String> {
    let mut b = udata;
    while b.len() >= 2 {
        let (ty, len) = (b[0], b[1] as usize);
        if b.len() < 2 + len {
            return None;
        }
        if ty == 0 {
            return Some(cstr(&b[2..2 + len]));
        }
        b = &b[2 + len..];
    }
    None
}

impl Nfnl {
    /// A NETLINK_NETFILTER socket in the calling thread's namespace.
    pub fn new() -> Result<Nfnl> {
        Ok(Nfnl {
            conn: Conn::open(NETLINK_NETFILTER)?,
        })
    }
}

impl<W: Wire> Nfnl<W> {
    pub fn with_wire(wire: W) -> Nfnl<W> {
        Nfnl {
            conn: Conn::with_wire(wire),
        }
    }

    /// Sends `msgs` (each with its flags) as one transaction: all or nothing.
    fn batch(&mut self, op: &str, msgs: Vec<Message>) -> Result<()> {
        let begin = Message::batch_marker(NFNL_MSG_BATCH_BEGIN);
        let end = Message::batch_marker(NFNL_MSG_BATCH_END);
        let msgs = std::iter::once((begin, 0))
            .chain(msgs.into_iter().map(|m| {
                let flags = m.flags | NLM_F_ACK;
                (m, flags)
            }))
            .chain(std::iter::once((end, 0)));
        self.conn.batch(&format!("nftables {op}"), msgs)
    }

    /// A GET (or with `dump`, a dump); the answers as (NFT_MSG_*, attributes).
    fn get(&mut self, op: &str, m: Message, dump: bool) -> Result<Vec<(u16, Vec<u8>)>> {
        let flags = m.flags | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        let answers = self.conn.request(&format!("nftables {op}"), m, flags)?;
        Ok(answers
            .into_iter()
            .map(|a| (a.nft_msg(), a.attrs.b))
            .collect())
    }

    /// Whether set `set` exists in `table`.
    pub fn set_exists(&mut self, family: u8, table: &str, set: &str) -> Result<bool> {
        let mut m = Message::new(msg::GETSET, 0, family);
        m.attrs.str(1, table).str(2, set);
        match self.get(&format!("get set {table} {set}"), m, false) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates the table, its sets and chains if missing, and replaces the
    /// rules of its chains with `spec`'s, in one transaction. Set elements
    /// are kept.
    pub fn apply_table(&mut self, spec: &TableSpec) -> Result<()> {
        let msgs = Self::table_msgs(spec);
        self.batch(&format!("apply table {}", spec.name), msgs)
    }

    /// Deletes the table (when `exists`) and creates it anew from `spec`,
    /// then applies `edits` (e.g. set elements), all in one transaction:
    /// sets and their elements start over, and no packet sees a half-made
    /// table.
    pub fn replace_table(&mut self, spec: &TableSpec, exists: bool, edits: &[Edit]) -> Result<()> {
        let mut msgs = vec![];
        if exists {
            let mut m = Message::new(msg::DELTABLE, 0, spec.family);
            m.attrs.str(1, &spec.name);
            msgs.push(m);
        }
        msgs.extend(Self::table_msgs(spec));
        msgs.extend(
            edits
                .iter()
                .map(|e| Self::edit_msg(spec.family, &spec.name, e)),
        );
        self.batch(&format!("replace table {}", spec.name), msgs)
    }

    fn table_msgs(spec: &TableSpec) -> Vec<Message> {
        let mut msgs = vec![];
        let mut t = Message::new(msg::NEWTABLE, NLM_F_CREATE, spec.family);
        t.attrs.str(1, &spec.name);
        msgs.push(t);
        for (i, s) in spec.sets.iter().enumerate() {
            let mut m = Message::new(msg::NEWSET, NLM_F_CREATE, spec.family);
            // NFT_SET_TIMEOUT | NFT_SET_EVAL for a dynamic set
            let flags = if s.dynamic_timeout_ms.is_some() {
                0x10 | 0x20
            } else {
                0
            };
            m.attrs
                .str(1, &spec.name)
                .str(2, &s.name)
                .be32(3, flags)
                .be32(4, s.key_type)
                .be32(5, s.key_len)
                .be32(10, i as u32 + 1);
            if let Some(ms) = s.dynamic_timeout_ms {
                // NFTA_SET_DESC { NFTA_SET_DESC_SIZE }, NFTA_SET_TIMEOUT
                m.attrs.begin(9).be32(1, DYNAMIC_SET_SIZE).end();
                m.attrs.put(11, &ms.to_be_bytes());
            }
            msgs.push(m);
        }
        // regular chains first, so base chains can jump to them
        let mut chains: Vec<&ChainSpec> = spec.chains.iter().filter(|c| c.hook.is_none()).collect();
        chains.extend(spec.chains.iter().filter(|c| c.hook.is_some()));
        for c in &chains {
            let mut m = Message::new(msg::NEWCHAIN, NLM_F_CREATE, spec.family);
            m.attrs.str(1, &spec.name).str(3, &c.name);
            if let Some((hook, prio)) = c.hook {
                m.attrs.begin(4).be32(1, hook).be32(2, prio as u32).end();
                m.attrs.be32(5, NF_ACCEPT as u32).str(7, "filter");
            }
            msgs.push(m);
        }
        for c in &chains {
            // flush: DELRULE with table + chain only
            let mut m = Message::new(msg::DELRULE, 0, spec.family);
            m.attrs.str(1, &spec.name).str(2, &c.name);
            msgs.push(m);
        }
        for c in &chains {
            for r in &c.rules {
                msgs.push(Self::rule_msg(spec.family, &spec.name, &c.name, r));
            }
        }
        msgs
    }

    /// NEWRULE appending `r` to `chain`.
    fn rule_msg(family: u8, table: &str, chain: &str, r: &RuleSpec) -> Message {
        let mut m = Message::new(msg::NEWRULE, NLM_F_CREATE | NLM_F_APPEND, family);
        m.attrs.str(1, table).str(2, chain);
        m.attrs.begin(4);
        for e in &r.exprs {
            encode_expr(&mut m.attrs, e);
        }
        m.attrs.end();
        m.attrs.put(7, &comment_udata(&r.comment));
        m
    }

    /// Applies `edits` to `table` in one transaction: all or nothing. Rules
    /// and set elements not named keep their state (counters, limit buckets).
    pub fn edit(&mut self, family: u8, table: &str, edits: &[Edit]) -> Result<()> {
        if edits.is_empty() {
            return Ok(());
        }
        let msgs = edits
            .iter()
            .map(|e| Self::edit_msg(family, table, e))
            .collect();
        self.batch(&format!("edit table {table}"), msgs)
    }

    fn edit_msg(family: u8, table: &str, e: &Edit) -> Message {
        match e {
            Edit::DeleteRule { chain, handle } => {
                let mut m = Message::new(msg::DELRULE, 0, family);
                m.attrs
                    .str(1, table)
                    .str(2, chain)
                    .put(3, &handle.to_be_bytes());
                m
            }
            Edit::AppendRule { chain, rule } => Self::rule_msg(family, table, chain, rule),
            Edit::AddElements { set, keys } => {
                Self::elem_msg(msg::NEWSETELEM, family, table, set, keys)
            }
            Edit::DeleteElements { set, keys } => {
                Self::elem_msg(msg::DELSETELEM, family, table, set, keys)
            }
        }
    }

    /// Deletes a table; Ok(false) if it did not exist.
    pub fn delete_table(&mut self, family: u8, table: &str) -> Result<bool> {
        let mut m = Message::new(msg::DELTABLE, 0, family);
        m.attrs.str(1, table);
        match self.batch(&format!("delete table {table}"), vec![m]) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The rules of `table` with their chains and comments, in order.
    pub fn rules(&mut self, family: u8, table: &str) -> Result<Vec<DumpedRule>> {
        let mut m = Message::new(msg::GETRULE, 0, family);
        m.attrs.str(1, table);
        let answers = match self.get(&format!("list rules of {table}"), m, true) {
            Ok(a) => a,
            Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut out = vec![];
        for (ty, body) in answers {
            if ty != msg::NEWRULE {
                continue;
            }
            let mut r = DumpedRule {
                chain: String::new(),
                handle: 0,
                comment: None,
                counter: None,
            };
            let mut tbl = String::new();
            for (at, p) in attrs(&body) {
                match at {
                    1 => tbl = cstr(p),
                    2 => r.chain = cstr(p),
                    3 => {
                        r.handle = p
                            .get(..8)
                            .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()))
                    }
                    4 => r.counter = parse_counter(p),
                    7 => r.comment = parse_comment(p),
                    _ => {}
                }
            }
            if tbl == table {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn elem_msg(m: u16, family: u8, table: &str, set: &str, keys: &[Vec<u8>]) -> Message {
        let mut msg = Message::new(
            m,
            if m == msg::NEWSETELEM {
                NLM_F_CREATE
            } else {
                0
            },
            family,
        );
        msg.attrs.str(1, table).str(2, set).begin(3);
        for k in keys {
            msg.attrs.begin(1).data_value(1, k).end();
        }
        msg.attrs.end();
        msg
    }

    /// Adds elements (an existing element is not an error).
    pub fn add_elements(
        &mut self,
        family: u8,
        table: &str,
        set: &str,
        keys: &[Vec<u8>],
    ) -> Result<()> {
        let m = Self::elem_msg(msg::NEWSETELEM, family, table, set, keys);
        self.batch(&format!("add element to {table} {set}"), vec![m])
    }

    /// Deletes one element; Ok(false) if it (or the set) did not exist.
    pub fn delete_element(
        &mut self,
        family: u8,
        table: &str,
        set: &str,
        key: &[u8],
    ) -> Result<bool> {
        let m = Self::elem_msg(msg::DELSETELEM, family, table, set, &[key.to_vec()]);
        match self.batch(&format!("delete element from {table} {set}"), vec![m]) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The keys of a set's elements; empty if the set does not exist.
    pub fn elements(&mut self, family: u8, table: &str, set: &str) -> Result<Vec<Vec<u8>>> {
        let mut m = Message::new(msg::GETSETELEM, 0, family);
        m.attrs.str(1, table).str(2, set);
        let answers = match self.get(&format!("list elements of {table} {set}"), m, true) {
            Ok(a) => a,
            Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut out = vec![];
        for (ty, body) in answers {
            if ty != msg::NEWSETELEM {
                continue;
            }
            for (at, list) in attrs(&body) {
                if at != 3 {
                    continue;
                }
                for (_, elem) in attrs(list) {
                    for (et, key) in attrs(elem) {
                        if et == 1 {
                            for (dt, v) in attrs(key) {
                                if dt == 1 {
                                    out.push(v.to_vec());
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_type_matches_nft() {
        // ifname . ether_addr . ipv4_addr as nft encodes it
        assert_eq!(
            concat_type(&[TYPE_IFNAME, TYPE_ETHERADDR, TYPE_IPADDR]),
            (41 << 12) | (9 << 6) | 7
        );
    }

    #[test]
    fn attrs_roundtrip_and_nesting() {
        let mut a = Attrs::default();
        a.str(1, "ros2_cni")
            .begin(3)
            .begin(1)
            .data_value(1, &[1, 2, 3, 4, 5])
            .end()
            .end();
        let top: Vec<_> = attrs(&a.b).collect();
        assert_eq!(top.len(), 2);
        assert_eq!(cstr(top[0].1), "ros2_cni");
        let elem = attrs(top[1].1).next().unwrap().1;
        let key = attrs(elem).next().unwrap().1;
        let val = attrs(key).next().unwrap().1;
        assert_eq!(val, &[1, 2, 3, 4, 5]);
        assert!(a.b.len().is_multiple_of(4));
    }

    #[test]
    fn comments_roundtrip() {
        assert_eq!(
            parse_comment(&comment_udata("ros2-cni v1 x")).as_deref(),
            Some("ros2-cni v1 x")
        );
        assert_eq!(parse_comment(&[0, 200, 1]), None);
    }

    #[test]
    fn limit_over_is_encoded_as_the_kernel_reads_it() {
        let mut a = Attrs::default();
        encode_expr(
            &mut a,
            &Expr::Limit {
                rate: 200,
                unit_seconds: 1,
                burst: 1000,
                over: true,
            },
        );
        let elem = attrs(&a.b).next().unwrap().1;
        let parts: Vec<_> = attrs(elem).collect();
        assert_eq!(cstr(parts[0].1), "limit");
        let data: Vec<(u16, Vec<u8>)> = attrs(parts[1].1).map(|(t, p)| (t, p.to_vec())).collect();
        assert_eq!(
            data,
            vec![
                (1, 200u64.to_be_bytes().to_vec()),  // NFTA_LIMIT_RATE
                (2, 1u64.to_be_bytes().to_vec()),    // NFTA_LIMIT_UNIT
                (3, 1000u32.to_be_bytes().to_vec()), // NFTA_LIMIT_BURST
                (4, 0u32.to_be_bytes().to_vec()),    // NFTA_LIMIT_TYPE: NFT_LIMIT_PKTS
                (5, 1u32.to_be_bytes().to_vec()),    // NFTA_LIMIT_FLAGS: NFT_LIMIT_F_INV
            ]
        );
    }

    #[test]
    fn truncated_attributes_do_not_panic() {
        for cut in 0..12 {
            let mut a = Attrs::default();
            a.str(1, "abc").be32(2, 7);
            let b = &a.b[..cut.min(a.b.len())];
            let _ = attrs(b).count();
        }
    }

    use crate::kernel::netlink::fake::{ack, done, nlmsg, split, Fake};
    use netlink_packet_core::{NLM_F_MULTIPART, NLM_F_REQUEST};

    /// An nf_tables message as the kernel sends it.
    fn answer(m: u16, flags: u16, seq: u32, family: u8, a: &Attrs) -> Vec<u8> {
        let mut p = vec![family, 0, 0, 0];
        p.extend_from_slice(&a.b);
        nlmsg((NFNL_SUBSYS_NFTABLES << 8) | m, flags, seq, &p)
    }

    fn nft(m: u16) -> u16 {
        (NFNL_SUBSYS_NFTABLES << 8) | m
    }

    #[test]
    fn a_table_goes_out_as_one_batch_between_begin_and_end() {
        let spec = TableSpec {
            family: NFPROTO_IPV4,
            name: "ros2_cni".into(),
            sets: vec![SetSpec {
                name: "groups".into(),
                key_type: TYPE_IPADDR,
                key_len: 4,
                dynamic_timeout_ms: None,
            }],
            chains: vec![ChainSpec {
                name: "pre".into(),
                hook: Some((NF_INET_PRE_ROUTING, -150)),
                rules: vec![RuleSpec {
                    comment: "ros2-cni v1 ttl".into(),
                    exprs: vec![Expr::Counter],
                }],
            }],
        };
        let mut nf = Nfnl::with_wire(Fake::default());
        // begin (1), table, set, chain, flush, rule (2..=6), end (7)
        for seq in 2..=6 {
            nf.conn.wire().answers.push_back(ack(seq, 0));
        }
        nf.apply_table(&spec).unwrap();
        let sent = nf.conn.wire().sent.clone();
        assert_eq!(sent.len(), 1, "one datagram");
        let msgs = split(&sent[0]);
        let types: Vec<u16> = msgs.iter().map(|m| m.0).collect();
        assert_eq!(
            types,
            [
                NFNL_MSG_BATCH_BEGIN,
                nft(msg::NEWTABLE),
                nft(msg::NEWSET),
                nft(msg::NEWCHAIN),
                nft(msg::DELRULE),
                nft(msg::NEWRULE),
                NFNL_MSG_BATCH_END
            ]
        );
        let seqs: Vec<u32> = msgs.iter().map(|m| m.2).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
        // the markers: nfgenmsg with res_id NFNL_SUBSYS_NFTABLES (big-endian), no ack
        for m in [&msgs[0], &msgs[6]] {
            assert_eq!(m.1, NLM_F_REQUEST);
            assert_eq!(m.3, [0, 0, 0, 10]);
        }
        // every change asks for an ack
        assert!(msgs[1..6].iter().all(|m| m.1 & NLM_F_ACK != 0));
        assert_eq!(
            msgs[5].1,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND
        );
        assert_eq!(msgs[1].3[0], NFPROTO_IPV4);
        let first = attrs(&msgs[1].3[NFGENMSG_LEN..]).next().unwrap();
        assert_eq!((first.0, cstr(first.1).as_str()), (1, "ros2_cni"));
    }

    #[test]
    fn missing_objects_are_false_or_empty_and_other_errors_keep_op_and_errno() {
        let mut nf = Nfnl::with_wire(Fake::default());
        // delete table: begin 1, DELTABLE 2, end 3
        nf.conn.wire().answers.push_back(ack(2, -libc::ENOENT));
        assert!(!nf.delete_table(NFPROTO_BRIDGE, "ros2_cni").unwrap());
        // delete element: begin 4, DELSETELEM 5, end 6
        nf.conn.wire().answers.push_back(ack(5, -libc::EPERM));
        let e = nf
            .delete_element(NFPROTO_BRIDGE, "ros2_cni", "pods", &[1, 2])
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::EPERM));
        assert!(
            e.to_string()
                .starts_with("nftables delete element from ros2_cni pods: "),
            "{e}"
        );
        // set_exists: a GET with ack (7)
        let mut set = Attrs::default();
        set.str(1, "ros2_cni").str(2, "pods");
        let mut d = answer(msg::NEWSET, 0, 7, NFPROTO_BRIDGE, &set);
        d.extend(ack(7, 0));
        nf.conn.wire().answers.push_back(d);
        assert!(nf.set_exists(NFPROTO_BRIDGE, "ros2_cni", "pods").unwrap());
        nf.conn.wire().answers.push_back(ack(8, -libc::ENOENT));
        assert!(!nf.set_exists(NFPROTO_BRIDGE, "ros2_cni", "pods").unwrap());
        nf.conn.wire().answers.push_back(ack(9, -libc::ENOENT));
        assert!(nf
            .elements(NFPROTO_BRIDGE, "ros2_cni", "pods")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn dumped_rules_come_back_with_chain_handle_comment_and_counter() {
        let mut rule = Attrs::default();
        rule.str(1, "ros2_cni")
            .str(2, "fwd")
            .put(3, &42u64.to_be_bytes())
            .begin(4)
            .begin(1)
            .str(1, "counter")
            .begin(2)
            .put(1, &1500u64.to_be_bytes()) // NFTA_COUNTER_BYTES
            .put(2, &3u64.to_be_bytes()) // NFTA_COUNTER_PACKETS
            .end()
            .end()
            .end()
            .put(7, &comment_udata("ros2-cni v1 fwd"));
        let mut other = Attrs::default();
        other.str(1, "someone_else").str(2, "x");
        let mut nf = Nfnl::with_wire(Fake::default());
        let mut d = answer(msg::NEWRULE, NLM_F_MULTIPART, 1, NFPROTO_IPV4, &rule);
        d.extend(answer(
            msg::NEWRULE,
            NLM_F_MULTIPART,
            1,
            NFPROTO_IPV4,
            &other,
        ));
        nf.conn.wire().answers.push_back(d);
        nf.conn.wire().answers.push_back(done(1, 0));
        let rules = nf.rules(NFPROTO_IPV4, "ros2_cni").unwrap();
        assert_eq!(
            rules,
            [DumpedRule {
                chain: "fwd".into(),
                handle: 42,
                comment: Some("ros2-cni v1 fwd".into()),
                counter: Some((3, 1500)),
            }]
        );
        let sent = split(&nf.conn.wire().sent[0]);
        assert_eq!(sent[0].0, nft(msg::GETRULE));
        assert_eq!(sent[0].1, NLM_F_REQUEST | NLM_F_DUMP);
    }

    #[test]
    fn dumped_set_elements_come_back_as_keys() {
        let mut nf = Nfnl::with_wire(Fake::default());
        let mut a = Attrs::default();
        a.str(1, "ros2_cni").str(2, "groups").begin(3);
        for k in [[239, 255, 0, 1], [239, 255, 0, 2]] {
            a.begin(1).data_value(1, &k).end();
        }
        a.end();
        let mut d = answer(msg::NEWSETELEM, NLM_F_MULTIPART, 1, NFPROTO_IPV4, &a);
        d.extend(done(1, 0));
        nf.conn.wire().answers.push_back(d);
        assert_eq!(
            nf.elements(NFPROTO_IPV4, "ros2_cni", "groups").unwrap(),
            [vec![239, 255, 0, 1], vec![239, 255, 0, 2]]
        );
    }
}
