//! The GGUF container (version 3), as llama.cpp's ggml defines it: a little-endian header of
//! typed key/value metadata and tensor descriptions, then the tensor data, each tensor at an
//! offset aligned to `general.alignment` (32 by default). Dimensions are listed innermost first
//! (`ne[0]` is the row length).

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const VERSION: u32 = 3;
pub const DEFAULT_ALIGNMENT: usize = 32;

/// ggml tensor types we read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    Q4_0,
    Q8_0,
    Bf16,
}

impl TensorType {
    pub fn id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q4_0 => 2,
            TensorType::Q8_0 => 8,
            TensorType::Bf16 => 30,
        }
    }

    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => TensorType::F32,
            1 => TensorType::F16,
            2 => TensorType::Q4_0,
            8 => TensorType::Q8_0,
            30 => TensorType::Bf16,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            TensorType::F32 => "f32",
            TensorType::F16 => "f16",
            TensorType::Q4_0 => "q4_0",
            TensorType::Q8_0 => "q8_0",
            TensorType::Bf16 => "bf16",
        }
    }

    /// (elements, bytes) per block.
    pub fn block(self) -> (usize, usize) {
        match self {
            TensorType::F32 => (1, 4),
            TensorType::F16 | TensorType::Bf16 => (1, 2),
            TensorType::Q4_0 => (32, 18),
            TensorType::Q8_0 => (32, 34),
        }
    }

    /// Bytes of `n` elements (`n` a multiple of the block size).
    pub fn bytes(self, n: usize) -> usize {
        let (e, b) = self.block();
        n / e * b
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    /// Elements of one type.
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        match self {
            Value::U8(v) => w.write_all(&[*v]),
            Value::I8(v) => w.write_all(&v.to_le_bytes()),
            Value::U16(v) => w.write_all(&v.to_le_bytes()),
            Value::I16(v) => w.write_all(&v.to_le_bytes()),
            Value::U32(v) => w.write_all(&v.to_le_bytes()),
            Value::I32(v) => w.write_all(&v.to_le_bytes()),
            Value::F32(v) => w.write_all(&v.to_le_bytes()),
            Value::Bool(v) => w.write_all(&[*v as u8]),
            Value::Str(s) => write_str(w, s),
            Value::Array(a) => {
                let ty = a.first().map(|v| v.type_id()).unwrap_or(4);
                w.write_all(&ty.to_le_bytes())?;
                w.write_all(&(a.len() as u64).to_le_bytes())?;
                for v in a {
                    v.write(w)?;
                }
                Ok(())
            }
            Value::U64(v) => w.write_all(&v.to_le_bytes()),
            Value::I64(v) => w.write_all(&v.to_le_bytes()),
            Value::F64(v) => w.write_all(&v.to_le_bytes()),
        }
    }
}

fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// A tensor's description.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Innermost first.
    pub dims: Vec<u64>,
    pub ty: TensorType,
    /// From the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
    pub fn bytes(&self) -> usize {
        self.ty.bytes(self.elements())
    }
}

fn align(x: usize, a: usize) -> usize {
    x.div_ceil(a) * a
}

/// Writes a GGUF file atomically. `tensors` give names, dimensions and types (offsets are
/// assigned here); `data(i)` produces tensor `i`'s bytes when it is written, so large models
/// stream through without a second copy in memory.
pub fn write(
    path: &Path,
    metadata: &[(String, Value)],
    tensors: &[(String, Vec<u64>, TensorType)],
    mut data: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    let mut infos = Vec::with_capacity(tensors.len());
    let mut off = 0usize;
    for (name, dims, ty) in tensors {
        let info = TensorInfo {
            name: name.clone(),
            dims: dims.clone(),
            ty: *ty,
            offset: off as u64,
        };
        let (e, _) = ty.block();
        if !(dims.first().copied().unwrap_or(0) as usize).is_multiple_of(e) {
            bail!(
                "tensor `{name}`: rows of {} values cannot be stored as {} (blocks of {e})",
                dims[0],
                ty.name()
            );
        }
        off = align(off + info.bytes(), DEFAULT_ALIGNMENT);
        infos.push(info);
    }
    tinyllama_model::atomic::write_atomic_with(path, |w| {
        let mut head = Vec::new();
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&(infos.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            write_str(&mut head, k)?;
            head.extend_from_slice(&v.type_id().to_le_bytes());
            v.write(&mut head)?;
        }
        for t in &infos {
            write_str(&mut head, &t.name)?;
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&t.offset.to_le_bytes());
        }
        let pad = align(head.len(), DEFAULT_ALIGNMENT) - head.len();
        head.extend(std::iter::repeat_n(0u8, pad));
        w.write_all(&head)?;
        // Position within the data section.
        let mut pos = 0usize;
        for (i, t) in infos.iter().enumerate() {
            let bytes = data(i)?;
            if bytes.len() != t.bytes() {
                bail!(
                    "tensor `{}`: {} bytes of data, expected {}",
                    t.name,
                    bytes.len(),
                    t.bytes()
                );
            }
            w.write_all(&vec![0u8; t.offset as usize - pos])?;
            w.write_all(&bytes)?;
            pos = t.offset as usize + bytes.len();
        }
        w.write_all(&vec![0u8; align(pos, DEFAULT_ALIGNMENT) - pos])?;
        Ok(())
    })
    .with_context(|| format!("writing {}", path.display()))
}

/// A GGUF file read into memory.
pub struct GgufFile {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    data_start: usize,
    bytes: Vec<u8>,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.pos + n > self.b.len() {
            bail!(
                "truncated: {what} needs {n} bytes at offset {} but the file has {}",
                self.pos,
                self.b.len()
            );
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into()?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into()?))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).with_context(|| format!("{what} is not UTF-8"))
    }
    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.take(1, what)?[0]),
            1 => Value::I8(self.take(1, what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.take(2, what)?.try_into()?)),
            3 => Value::I16(i16::from_le_bytes(self.take(2, what)?.try_into()?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(self.u32(what)? as i32),
            6 => Value::F32(f32::from_le_bytes(self.take(4, what)?.try_into()?)),
            7 => Value::Bool(self.take(1, what)?[0] != 0),
            8 => Value::Str(self.string(what)?),
            9 => {
                if depth > 2 {
                    bail!("{what}: arrays nested too deeply");
                }
                let ety = self.u32(what)?;
                let n = self.u64(what)? as usize;
                if n > self.b.len() {
                    bail!("{what}: array length {n} exceeds the file size");
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(ety, what, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(self.u64(what)? as i64),
            12 => Value::F64(f64::from_le_bytes(self.take(8, what)?.try_into()?)),
            t => bail!("{what}: unknown value type {t}"),
        })
    }
}

impl GgufFile {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(bytes).with_context(|| format!("{} is not a valid GGUF file", path.display()))
    }

    pub fn parse(bytes: Vec<u8>) -> Result<Self> {
        let mut c = Cursor { b: &bytes, pos: 0 };
        if c.take(4, "magic")? != MAGIC {
            bail!("bad magic (expected `GGUF`)");
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            bail!("GGUF version {version} is not supported (2 and 3 are)");
        }
        let n_tensors = c.u64("tensor count")? as usize;
        let n_kv = c.u64("metadata count")? as usize;
        if n_tensors > bytes.len() || n_kv > bytes.len() {
            bail!("tensor or metadata count exceeds the file size");
        }
        let mut metadata = Vec::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key {i}"))?;
            let ty = c.u32(&format!("type of `{key}`"))?;
            let v = c.value(ty, &format!("value of `{key}`"), 0)?;
            metadata.push((key, v));
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor {i} name"))?;
            let nd = c.u32(&format!("dimensions of `{name}`"))? as usize;
            if nd > 4 {
                bail!("tensor `{name}` has {nd} dimensions (at most 4)");
            }
            let dims = (0..nd)
                .map(|_| c.u64(&format!("dimensions of `{name}`")))
                .collect::<Result<Vec<_>>>()?;
            let tid = c.u32(&format!("type of `{name}`"))?;
            let ty = TensorType::from_id(tid).with_context(|| {
                format!("tensor `{name}` has ggml type {tid}, which this reader does not handle (f32, f16, bf16, q8_0, q4_0)")
            })?;
            let offset = c.u64(&format!("offset of `{name}`"))?;
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }
        let alignment = metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .map(|a| a as usize)
            .unwrap_or(DEFAULT_ALIGNMENT);
        if alignment == 0 || !alignment.is_power_of_two() {
            bail!("general.alignment {alignment} is not a power of two");
        }
        let data_start = align(c.pos, alignment);
        for t in &tensors {
            let end = data_start as u64 + t.offset + t.bytes() as u64;
            if end > bytes.len() as u64 {
                bail!(
                    "tensor `{}` extends to byte {end}, past the end of the file ({})",
                    t.name,
                    bytes.len()
                );
            }
        }
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            data_start,
            bytes,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        let s = self.data_start + t.offset as usize;
        &self.bytes[s..s + t.bytes()]
    }

    /// A tensor's values as f32 (dequantised).
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self
            .tensor(name)
            .with_context(|| format!("the file has no tensor `{name}`"))?;
        Ok(decode(t.ty, self.data(t)))
    }
}

/// Raw tensor bytes to f32.
pub fn decode(ty: TensorType, b: &[u8]) -> Vec<f32> {
    let f16 = |x: &[u8]| half::f16::from_le_bytes([x[0], x[1]]).to_f32();
    match ty {
        TensorType::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        TensorType::F16 => b.chunks_exact(2).map(f16).collect(),
        TensorType::Bf16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        TensorType::Q8_0 => b
            .chunks_exact(34)
            .flat_map(|blk| {
                let d = f16(&blk[..2]);
                blk[2..].iter().map(move |&q| q as i8 as f32 * d)
            })
            .collect(),
        TensorType::Q4_0 => b
            .chunks_exact(18)
            .flat_map(|blk| {
                let d = f16(&blk[..2]);
                let qs = &blk[2..];
                let lo = qs.iter().map(move |&q| ((q & 15) as i32 - 8) as f32 * d);
                let hi = qs.iter().map(move |&q| ((q >> 4) as i32 - 8) as f32 * d);
                lo.chain(hi).collect::<Vec<_>>()
            })
            .collect(),
    }
}
