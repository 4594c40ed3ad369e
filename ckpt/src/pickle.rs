//! A restricted reader for the `data.pkl` of a PyTorch zip checkpoint (`torch.save`, PyTorch
//! ≥ 1.6, pickle protocol 2).
//!
//! It never runs code: it interprets the pickle opcodes itself and rebuilds only plain data
//! (dicts, lists, tuples, strings, numbers, `None`) and tensor *references* (storage key, dtype,
//! offset, size, stride; the bytes stay in the archive). The only globals it accepts are those
//! torch writes for a state dict (`torch._utils._rebuild_tensor_v2` / `_v3` /
//! `_rebuild_parameter`, the storage types, the float dtypes, `collections.OrderedDict`);
//! any other GLOBAL is refused by name before anything else happens. No crate does this:
//! `serde-pickle` has no persistent ids or REDUCE, and `candle-core`'s reader is not a crate
//! of its own.
//!
//! Memory is bounded: the stack and memo are capped, strings are slices of the pickle, memo
//! reads share values (`Rc`), and containers nest at most [`MAX_DEPTH`] deep (a container
//! that is already inside another cannot be added to, so no cycles form and drop never
//! recurses deeper than that).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Most values on the stack at once.
pub const MAX_STACK: usize = 1 << 18;
/// Most memo entries.
pub const MAX_MEMO: usize = 1 << 20;
/// Deepest container nesting.
pub const MAX_DEPTH: usize = 64;

/// Element types of torch storages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// float32.
    F32,
    /// float16.
    F16,
    /// bfloat16.
    BF16,
    /// float64.
    F64,
    /// An integer or bool type (named as in safetensors), refused as weights.
    Other(&'static str, usize),
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F64 => 8,
            DType::Other(_, s) => s,
        }
    }
    /// The safetensors-style name (`F32`, `I64`, …).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F64 => "F64",
            DType::Other(n, _) => n,
        }
    }
}

/// The globals the reader accepts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Global {
    /// `torch._utils._rebuild_tensor_v2`.
    RebuildV2,
    /// `torch._utils._rebuild_tensor_v3` (untyped storage + dtype).
    RebuildV3,
    /// `torch._utils._rebuild_parameter`.
    RebuildParameter,
    /// `collections.OrderedDict`.
    OrderedDict,
    /// A storage type; `None` is `torch.UntypedStorage` (bytes).
    Storage(Option<DType>),
    /// A dtype such as `torch.float32`.
    Dtype(DType),
}

fn storage_type(name: &str) -> Option<Option<DType>> {
    let o = |n, s| Some(Some(DType::Other(n, s)));
    match name {
        "FloatStorage" => Some(Some(DType::F32)),
        "HalfStorage" => Some(Some(DType::F16)),
        "BFloat16Storage" => Some(Some(DType::BF16)),
        "DoubleStorage" => Some(Some(DType::F64)),
        "LongStorage" => o("I64", 8),
        "IntStorage" => o("I32", 4),
        "ShortStorage" => o("I16", 2),
        "CharStorage" => o("I8", 1),
        "ByteStorage" => o("U8", 1),
        "BoolStorage" => o("BOOL", 1),
        "UntypedStorage" => Some(None),
        _ => None,
    }
}

fn dtype_global(name: &str) -> Option<DType> {
    match name {
        "float32" | "float" => Some(DType::F32),
        "float16" | "half" => Some(DType::F16),
        "bfloat16" => Some(DType::BF16),
        "float64" | "double" => Some(DType::F64),
        "int64" | "long" => Some(DType::Other("I64", 8)),
        "int32" | "int" => Some(DType::Other("I32", 4)),
        "uint8" => Some(DType::Other("U8", 1)),
        "bool" => Some(DType::Other("BOOL", 1)),
        _ => None,
    }
}

/// The accepted global `module.name`, or `None` (refused).
pub fn lookup_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildV2),
        ("torch._utils", "_rebuild_tensor_v3") => Some(Global::RebuildV3),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch" | "torch.storage", n) => storage_type(n)
            .map(Global::Storage)
            .or_else(|| dtype_global(n).map(Global::Dtype)),
        _ => None,
    }
}

/// A storage named by a persistent id: the archive's `data/KEY`.
#[derive(Debug)]
pub struct Storage {
    /// The key (file name under `data/`).
    pub key: String,
    /// Element type; `None` for an untyped (byte) storage.
    pub dtype: Option<DType>,
    /// Size in bytes, as the persistent id gives it.
    pub bytes: usize,
}

/// A tensor view of a storage.
#[derive(Debug)]
pub struct TensorRef {
    /// The storage.
    pub storage: Rc<Storage>,
    /// Element type.
    pub dtype: DType,
    /// Offset into the storage, in elements.
    pub offset: usize,
    /// Sizes.
    pub size: Vec<usize>,
    /// Strides, in elements.
    pub stride: Vec<usize>,
}

/// A list, dict (flat key, value pairs) or tuple.
#[derive(Debug, Default)]
pub struct Seq {
    /// The items.
    pub items: RefCell<Vec<Value>>,
    depth: Cell<usize>,
    frozen: Cell<bool>,
}

/// A rebuilt pickle value.
#[derive(Clone, Debug)]
pub enum Value {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int (up to 64 bits).
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(Rc<str>),
    /// A tuple.
    Tuple(Rc<Seq>),
    /// A list.
    List(Rc<Seq>),
    /// A dict, as key, value, key, value, ….
    Dict(Rc<Seq>),
    /// An accepted global.
    Global(Global, Rc<str>),
    /// A storage.
    Storage(Rc<Storage>),
    /// A tensor.
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn seq(&self) -> Option<&Rc<Seq>> {
        match self {
            Value::Tuple(s) | Value::List(s) | Value::Dict(s) => Some(s),
            _ => None,
        }
    }
    fn depth(&self) -> usize {
        self.seq().map_or(0, |s| s.depth.get())
    }
    /// The items of a tuple (or list).
    pub fn items(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(s) | Value::List(s) => Some(s.items.borrow().clone()),
            _ => None,
        }
    }
    /// The (key, value) pairs of a dict.
    pub fn pairs(&self) -> Option<Vec<(Value, Value)>> {
        let Value::Dict(s) = self else { return None };
        let it = s.items.borrow();
        Some(
            it.chunks_exact(2)
                .map(|c| (c[0].clone(), c[1].clone()))
                .collect(),
        )
    }
    /// The string, if a string.
    pub fn as_str(&self) -> Option<&str> {
        if let Value::Str(s) = self {
            Some(s)
        } else {
            None
        }
    }
}

fn new_seq(items: Vec<Value>) -> Result<Rc<Seq>, String> {
    let s = Rc::new(Seq::default());
    for v in &items {
        freeze_child(v, &s)?;
    }
    *s.items.borrow_mut() = items;
    Ok(s)
}

/// Marks `child` as inside `parent` and raises the parent's depth.
fn freeze_child(child: &Value, parent: &Seq) -> Result<(), String> {
    if let Some(c) = child.seq() {
        c.frozen.set(true);
    }
    if parent.frozen.get() {
        return Err("the pickle adds to a container that is already inside another".into());
    }
    let d = parent.depth.get().max(child.depth() + 1);
    if d > MAX_DEPTH {
        return Err(format!(
            "the pickle nests containers deeper than {MAX_DEPTH} levels"
        ));
    }
    parent.depth.set(d);
    Ok(())
}

/// What went wrong reading a pickle.
#[derive(Debug)]
pub enum PickleError {
    /// The pickle calls a global outside the accepted set (`module.name`).
    Refused(String),
    /// Anything else (truncated, unknown opcode, bad structure).
    Bad(String),
}

type R<T> = Result<T, PickleError>;

fn bad<T>(msg: impl Into<String>) -> R<T> {
    Err(PickleError::Bad(msg.into()))
}

/// The interpreter state.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

/// Reads a pickle, returning the value its STOP leaves.
pub fn load(data: &[u8]) -> R<Value> {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        let at = m.pos;
        let op = m.byte()?;
        if op == b'.' {
            return m.pop();
        }
        m.step(op).map_err(|e| match e {
            PickleError::Bad(s) => {
                PickleError::Bad(format!("{s} (opcode 0x{op:02x} at byte {at})"))
            }
            r => r,
        })?;
    }
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> R<&[u8]> {
        match self.pos.checked_add(n).filter(|&e| e <= self.data.len()) {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => bad("the pickle ends early"),
        }
    }
    fn byte(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn line(&mut self) -> R<String> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().take(256).position(|&b| b == b'\n') else {
            return bad("a GLOBAL name is unterminated or longer than 256 bytes");
        };
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn push(&mut self, v: Value) -> R<()> {
        if self.stack.len() >= MAX_STACK {
            return bad(format!("the pickle stack exceeds {MAX_STACK} values"));
        }
        self.stack.push(v);
        Ok(())
    }
    fn pop(&mut self) -> R<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return bad("the pickle pops past a MARK");
        }
        self.stack
            .pop()
            .map_or_else(|| bad("the pickle pops an empty stack"), Ok)
    }
    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let Some(m) = self.marks.pop() else {
            return bad("the pickle has no MARK to pop to");
        };
        Ok(self.stack.split_off(m))
    }
    fn top_seq(&self) -> R<Rc<Seq>> {
        match self.stack.last() {
            Some(Value::List(s) | Value::Dict(s)) => Ok(s.clone()),
            _ => bad("the pickle adds items to something that is not a list or dict"),
        }
    }
    fn string(&mut self, n: usize) -> R<()> {
        let s = String::from_utf8_lossy(self.take(n)?).into_owned();
        self.push(Value::Str(s.into()))
    }
    fn put(&mut self, k: u32) -> R<()> {
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&k) {
            return bad(format!("the pickle memo exceeds {MAX_MEMO} entries"));
        }
        let v = self.stack.last().cloned();
        let v = v.map_or_else(|| bad("the pickle memoizes an empty stack"), Ok)?;
        self.memo.insert(k, v);
        Ok(())
    }
    fn get(&mut self, k: u32) -> R<()> {
        let v = self.memo.get(&k).cloned();
        let v = v.map_or_else(
            || bad(format!("the pickle reads memo {k}, never written")),
            Ok,
        )?;
        self.push(v)
    }
    fn tuple(&mut self, items: Vec<Value>) -> R<()> {
        let s = new_seq(items).map_err(PickleError::Bad)?;
        s.frozen.set(true);
        self.push(Value::Tuple(s))
    }
    fn add(&mut self, items: Vec<Value>, dict: bool) -> R<()> {
        if dict && !items.len().is_multiple_of(2) {
            return bad("the pickle sets a dict item without a value");
        }
        let s = self.top_seq()?;
        if matches!(self.stack.last(), Some(Value::Dict(_))) != dict {
            return bad("the pickle mixes list and dict items");
        }
        for v in &items {
            freeze_child(v, &s).map_err(PickleError::Bad)?;
        }
        s.items.borrow_mut().extend(items);
        Ok(())
    }
    fn long1(&mut self) -> R<()> {
        let n = self.byte()? as usize;
        let b = self.take(n)?;
        if n > 8 {
            return bad("the pickle holds an integer wider than 64 bits");
        }
        let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
            [0xff; 8]
        } else {
            [0; 8]
        };
        buf[..n].copy_from_slice(b);
        self.push(Value::Int(i64::from_le_bytes(buf)))
    }
    fn global(&mut self, module: &str, name: &str) -> R<()> {
        match lookup_global(module, name) {
            Some(g) => self.push(Value::Global(g, format!("{module}.{name}").into())),
            None => Err(PickleError::Refused(format!("{module}.{name}"))),
        }
    }

    /// Markers, scalars, strings and the memo.
    fn step(&mut self, op: u8) -> R<()> {
        match op {
            0x80 => self.byte().map(drop),  // PROTO
            0x95 => self.take(8).map(drop), // FRAME
            b'(' => {
                self.marks.push(self.stack.len());
                Ok(())
            }
            b'}' => self.push(Value::Dict(Rc::default())),
            b']' => self.push(Value::List(Rc::default())),
            b')' => self.tuple(vec![]),
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'X' => {
                let n = self.u32()? as usize;
                self.string(n)
            }
            0x8c => {
                let n = self.byte()? as usize;
                self.string(n)
            }
            b'q' => {
                let k = self.byte()? as u32;
                self.put(k)
            }
            b'r' => {
                let k = self.u32()?;
                self.put(k)
            }
            0x94 => self.put(self.memo.len() as u32), // MEMOIZE
            b'h' => {
                let k = self.byte()? as u32;
                self.get(k)
            }
            b'j' => {
                let k = self.u32()?;
                self.get(k)
            }
            b'J' => {
                let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                self.push(Value::Int(v as i64))
            }
            b'K' => {
                let v = self.byte()?;
                self.push(Value::Int(v as i64))
            }
            b'M' => {
                let v = u16::from_le_bytes(self.take(2)?.try_into().unwrap());
                self.push(Value::Int(v as i64))
            }
            0x8a => self.long1(),
            b'G' => {
                let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                self.push(Value::Float(v))
            }
            _ => self.step_struct(op),
        }
    }

    /// Containers, globals, persistent ids and calls.
    fn step_struct(&mut self, op: u8) -> R<()> {
        match op {
            b't' => {
                let items = self.pop_mark()?;
                self.tuple(items)
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = (0..n).map(|_| self.pop()).collect::<R<Vec<_>>>()?;
                items.reverse();
                self.tuple(items)
            }
            b'a' => {
                let v = self.pop()?;
                self.add(vec![v], false)
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.add(items, false)
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.add(vec![k, v], true)
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.add(items, true)
            }
            b'0' => self.pop().map(drop),
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.global(&module, &name)
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module.as_str(), name.as_str()) {
                    (Some(m), Some(n)) => self.global(m, n),
                    _ => bad("STACK_GLOBAL without two strings"),
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let s = persistent_storage(&pid)?;
                self.push(Value::Storage(Rc::new(s)))
            }
            b'R' => {
                let args = self.pop()?;
                let f = self.pop()?;
                let v = reduce(&f, &args)?;
                self.push(v)
            }
            b'b' => {
                let _state = self.pop()?;
                match self.stack.last() {
                    Some(Value::Dict(_)) => Ok(()),
                    _ => bad("the pickle sets the state (BUILD) of something that is not a dict"),
                }
            }
            _ => bad("unsupported pickle opcode"),
        }
    }
}

/// `('storage', torch.FloatStorage, '0', 'cpu', numel)` → the storage it names.
fn persistent_storage(pid: &Value) -> R<Storage> {
    let items = pid.items().unwrap_or_default();
    let [tag, ty, key, _loc, numel] = items.as_slice() else {
        return bad("a persistent id that is not ('storage', type, key, location, numel)");
    };
    let (Some("storage"), Value::Global(Global::Storage(dtype), _), Some(key), Value::Int(n)) =
        (tag.as_str(), ty, key.as_str(), numel)
    else {
        return bad("a persistent id that is not ('storage', type, key, location, numel)");
    };
    let elem = dtype.map_or(1, DType::size);
    let bytes = usize::try_from(*n)
        .ok()
        .and_then(|n| n.checked_mul(elem))
        .map_or_else(
            || bad(format!("storage {key} has an impossible size {n}")),
            Ok,
        )?;
    if key.is_empty() || key.contains(['/', '\\']) || key.contains("..") {
        return bad(format!("storage key {key:?} is not a plain name"));
    }
    Ok(Storage {
        key: key.to_string(),
        dtype: *dtype,
        bytes,
    })
}

fn usizes(v: &Value, what: &str) -> R<Vec<usize>> {
    let items = v
        .items()
        .map_or_else(|| bad(format!("tensor {what} is not a tuple")), Ok)?;
    items
        .iter()
        .map(|x| match x {
            Value::Int(i) if *i >= 0 => Ok(*i as usize),
            _ => bad(format!("tensor {what} holds a value that is not a size")),
        })
        .collect()
}

fn reduce(f: &Value, args: &Value) -> R<Value> {
    let Value::Global(g, name) = f else {
        return bad("REDUCE of something that is not a global");
    };
    let a = args
        .items()
        .map_or_else(|| bad("REDUCE arguments are not a tuple"), Ok)?;
    match g {
        Global::OrderedDict if a.is_empty() => Ok(Value::Dict(Rc::default())),
        Global::RebuildParameter if !a.is_empty() => Ok(a[0].clone()),
        Global::RebuildV2 | Global::RebuildV3 if a.len() >= 4 => rebuild(&a, *g),
        _ => bad(format!(
            "unexpected call of {name} with {} arguments",
            a.len()
        )),
    }
}

fn rebuild(a: &[Value], g: Global) -> R<Value> {
    let Value::Storage(storage) = &a[0] else {
        return bad("a tensor rebuilt from something that is not a storage");
    };
    let Value::Int(offset) = a[1] else {
        return bad("a tensor offset that is not an int");
    };
    let dtype = match (g, storage.dtype, a.get(6)) {
        (Global::RebuildV3, _, Some(Value::Global(Global::Dtype(d), _))) => *d,
        (Global::RebuildV2, Some(d), _) => d,
        _ => return bad("a tensor whose dtype cannot be told"),
    };
    let offset = usize::try_from(offset).or_else(|_| bad("a negative tensor offset"))?;
    let size = usizes(&a[2], "size")?;
    let stride = usizes(&a[3], "stride")?;
    if size.len() != stride.len() {
        return bad("a tensor whose size and stride differ in rank");
    }
    Ok(Value::Tensor(Rc::new(TensorRef {
        storage: storage.clone(),
        dtype,
        offset,
        size,
        stride,
    })))
}
