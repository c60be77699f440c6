//! Names of methods and classes read from the JVM's metaspace: a `Method`'s `ConstMethod`, its
//! constant pool's class and source file, and their `Symbol`s, each cached.

use std::sync::Arc;

use super::{JavaCode, NamedClass, NamedMethod, MAX_METHODS, MAX_SYMBOL};
use crate::{collect::remote::field_u64, runtimes::hotspot::signature::parameters};

/// Bytes of a symbol's body read with its length (most names are shorter).
const SYMBOL_PIECE: u64 = 64;

impl JavaCode {
    /// `Class.method(parameters)` and the source file of the `Method` at `method`: its
    /// `ConstMethod`'s header in one read, its class (by constant pool) and symbols cached.
    pub(super) fn method(&mut self, method: u64) -> Option<NamedMethod> {
        let l = self.layout.clone();
        let constant = self.memory.field(method, l.method_const).ok()?;
        let header_len = l.const_constants.max(l.const_name_index).max(l.const_signature_index) + 8;
        let mut header = vec![0u8; header_len as usize];
        self.memory.read(constant, &mut header).ok()?;
        let index = |at: u64| Some(u16::from_le_bytes([*header.get(at as usize)?, *header.get(at as usize + 1)?]));
        let (name, signature) = (index(l.const_name_index)?, index(l.const_signature_index)?);
        let pool = field_u64(&header, l.const_constants)?;
        let (class, file) = self.class(pool)?;
        let name = self.symbol(self.pool_symbol(pool, name)?)?;
        let signature = self.symbol(self.pool_symbol(pool, signature)?)?;
        let parameters = parameters(&signature)?;
        Some((format!("{class}.{name}({parameters})").into(), file))
    }

    /// The class (`java.lang.String`) and source file of the constant pool at `pool`, cached.
    fn class(&mut self, pool: u64) -> Option<NamedClass> {
        if let Some(known) = self.classes.get(&pool) {
            return known.clone();
        }
        let l = self.layout.clone();
        let mut header = vec![0u8; l.pool_size as usize];
        let read = self.memory.read(pool, &mut header).ok().and_then(|()| {
            let holder = field_u64(&header, l.pool_holder)?;
            let class = self.symbol(self.memory.field(holder, l.klass_name).ok()?)?.replace('/', ".");
            let file = l.pool_source_file.and_then(|at| {
                let at = at as usize;
                let index = u16::from_le_bytes([*header.get(at)?, *header.get(at + 1)?]);
                self.symbol(self.pool_symbol(pool, index)?)
            });
            Some((Arc::from(class), file))
        });
        if self.classes.len() >= MAX_METHODS {
            self.classes.clear();
        }
        self.classes.insert(pool, read.clone());
        read
    }

    /// A `Symbol`'s bytes: its length and first bytes in one read, the rest, if any, in a
    /// second (two exact reads where the first would run past readable memory).
    fn symbol_body(&self, at: u64) -> Option<Vec<u8>> {
        let (m, l) = (&*self.memory, &self.layout);
        let shift = l.symbol_length.min(l.symbol_body);
        let (len_at, body_at) = ((l.symbol_length - shift) as usize, (l.symbol_body - shift) as usize);
        let mut first = vec![0u8; body_at + SYMBOL_PIECE as usize];
        let (len, mut body) = match m.read(at.wrapping_add(shift), &mut first) {
            Ok(()) => (u16::from_le_bytes([*first.get(len_at)?, *first.get(len_at + 1)?]), first.split_off(body_at)),
            Err(_) => {
                let mut len = [0u8; 2];
                m.read(at.wrapping_add(l.symbol_length), &mut len).ok()?;
                (u16::from_le_bytes(len), Vec::new())
            }
        };
        let len = u64::from(len).min(MAX_SYMBOL) as usize;
        if body.len() < len {
            let mut rest = vec![0u8; len - body.len()];
            m.read(at.wrapping_add(l.symbol_body + body.len() as u64), &mut rest).ok()?;
            body.extend_from_slice(&rest);
        }
        body.truncate(len);
        Some(body)
    }

    /// The `Symbol*` in slot `index` of the constant pool at `pool`.
    fn pool_symbol(&self, pool: u64, index: u16) -> Option<u64> {
        let at = pool.wrapping_add(self.layout.pool_size).wrapping_add(8 * u64::from(index));
        self.memory.u64(at).ok()
    }

    /// A `Symbol`'s text, cached by address (symbols live as long as their classes).
    fn symbol(&mut self, at: u64) -> Option<Arc<str>> {
        if let Some(known) = self.symbols.get(&at) {
            return Some(known.clone());
        }
        let body = self.symbol_body(at)?;
        // Modified UTF-8: what is not UTF-8 is shown, not dropped.
        let text: Arc<str> = String::from_utf8_lossy(&body).into();
        if self.symbols.len() >= MAX_METHODS {
            self.symbols.clear();
        }
        self.symbols.insert(at, text.clone());
        Some(text)
    }
}
