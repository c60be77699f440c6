//! A Java thread's name and `Thread.State`, read from its `java.lang.Thread` object, for the
//! thread dump. The offsets of the few fields read are the JVM's own, computed at its start into
//! statics of `libjvm.so` (`java_lang_Thread::_name_offset`, ...), found through the file's symbol
//! table, where it has one (Debian's and Temurin's builds do); whether heap references and class
//! pointers are compressed, from the JVM's flags of the same names. A file without them gives a
//! dump with the OS's names and HotSpot's own thread states.

use super::vmstructs::VmStructs;
use crate::collect::remote::RemoteMemory;

/// Longest name read, in characters.
const MAX_NAME: u64 = 256;

/// The statics read, by their symbols (`.symtab`), as file addresses.
#[derive(Clone, Debug, Default)]
pub struct ObjectSymbols {
    thread_name: Option<u64>,
    /// JDK 17: the status is a field of the thread; JDK 19 on, of its `FieldHolder`.
    thread_status: Option<u64>,
    thread_holder: Option<u64>,
    holder_status: Option<u64>,
    string_value: Option<u64>,
    string_coder: Option<u64>,
    compressed_oops: Option<u64>,
    compressed_class_pointers: Option<u64>,
    compact_headers: Option<u64>,
}

impl ObjectSymbols {
    /// The statics of `elf`'s symbol table.
    pub fn find(elf: &object::File<'_>) -> Self {
        use object::{Object, ObjectSymbol};
        let mut s = Self::default();
        for symbol in elf.symbols() {
            let slot = match symbol.name() {
                Ok("_ZN16java_lang_Thread12_name_offsetE") => &mut s.thread_name,
                Ok("_ZN16java_lang_Thread21_thread_status_offsetE") => &mut s.thread_status,
                Ok("_ZN16java_lang_Thread14_holder_offsetE") => &mut s.thread_holder,
                Ok("_ZN28java_lang_Thread_FieldHolder21_thread_status_offsetE") => &mut s.holder_status,
                Ok("_ZN16java_lang_String13_value_offsetE") => &mut s.string_value,
                Ok("_ZN16java_lang_String13_coder_offsetE") => &mut s.string_coder,
                Ok("UseCompressedOops") => &mut s.compressed_oops,
                Ok("UseCompressedClassPointers") => &mut s.compressed_class_pointers,
                Ok("UseCompactObjectHeaders") => &mut s.compact_headers,
                _ => continue,
            };
            *slot = Some(symbol.address());
        }
        s
    }

    /// Where they are in a JVM of release `major` that loaded the file at `bias`, with what the
    /// tables say of compressed references; None without the fields a name needs.
    pub fn biased(&self, bias: u64, vm: &VmStructs, major: Option<u32>) -> Option<Objects> {
        let at = |a: Option<u64>| a.map(|a| a.wrapping_add(bias));
        let narrow = |name: &str| {
            vm.address("CompressedOops", &format!("_narrow_oop.{name}")).or_else(|| vm.address("CompressedOops", name))
        };
        Some(Objects {
            thread_obj: vm.value("JavaThread", "_threadObj")?,
            thread_name: at(self.thread_name)?,
            thread_status: at(self.thread_status),
            thread_holder: at(self.thread_holder),
            holder_status: at(self.holder_status),
            string_value: at(self.string_value)?,
            string_coder: at(self.string_coder)?,
            compressed_oops: at(self.compressed_oops)?,
            compressed_class_pointers: at(self.compressed_class_pointers)?,
            compact_headers: at(self.compact_headers),
            oop_base: narrow("_base")?,
            oop_shift: narrow("_shift")?,
            major: major?,
        })
    }
}

/// Where a JVM keeps what a thread's name and state are read from.
#[derive(Clone, Debug)]
pub struct Objects {
    thread_obj: u64,
    thread_name: u64,
    thread_status: Option<u64>,
    thread_holder: Option<u64>,
    holder_status: Option<u64>,
    string_value: u64,
    string_coder: u64,
    compressed_oops: u64,
    compressed_class_pointers: u64,
    compact_headers: Option<u64>,
    oop_base: u64,
    oop_shift: u64,
    major: u32,
}

/// What the statics held when read (set once at the JVM's start).
pub struct ObjectLayout {
    thread_obj: u64,
    name: u64,
    status: Option<Status>,
    value: u64,
    coder: u64,
    /// (base, shift) when references in objects are compressed.
    narrow: Option<(u64, u32)>,
    /// Where a `byte[]`'s length and first byte are.
    array_length: u64,
    array_data: u64,
}

/// Where the thread's status is: a field of the thread, or of the holder it refers to.
enum Status {
    Thread(u64),
    Holder(u64, u64),
}

impl Objects {
    /// The layout, read from the JVM now; None when its statics do not read as a JVM's.
    pub fn read(&self, m: &dyn RemoteMemory) -> Option<ObjectLayout> {
        let offset = |at: u64| m.i32(at).ok().and_then(|v| u64::try_from(v).ok()).filter(|&v| v > 0 && v < 4096);
        let flag = |at: u64| {
            let mut b = [0u8; 1];
            m.read(at, &mut b).ok().map(|()| b[0] != 0)
        };
        let status = match (self.thread_status, self.thread_holder, self.holder_status) {
            (Some(at), _, _) => offset(at).map(Status::Thread),
            (None, Some(holder), Some(status)) => Some(Status::Holder(offset(holder)?, offset(status)?)),
            _ => None,
        };
        let narrow = match flag(self.compressed_oops)? {
            true => Some((m.u64(self.oop_base).ok()?, m.i32(self.oop_shift).ok().and_then(|s| u32::try_from(s).ok())?)),
            false => None,
        };
        let compact = self.compact_headers.and_then(flag).unwrap_or(false);
        let array_length: u64 = match (compact, flag(self.compressed_class_pointers)?) {
            (true, _) => 8,
            (false, true) => 12,
            (false, false) => 16,
        };
        // Small elements follow the length at once from JDK 22 (before, at the next word).
        let array_data = if self.major >= 22 { array_length + 4 } else { (array_length + 4).next_multiple_of(8) };
        Some(ObjectLayout {
            thread_obj: self.thread_obj,
            name: offset(self.thread_name)?,
            status,
            value: offset(self.string_value)?,
            coder: offset(self.string_coder)?,
            narrow,
            array_length,
            array_data,
        })
    }
}

impl ObjectLayout {
    /// The `java.lang.Thread` of the `JavaThread` at `thread` (its `OopHandle` points at a slot
    /// holding it, uncompressed).
    fn thread_oop(&self, m: &dyn RemoteMemory, thread: u64) -> Option<u64> {
        let slot = m.field(thread, self.thread_obj).ok().filter(|&s| s != 0)?;
        m.u64(slot).ok().filter(|&o| o != 0)
    }

    /// The reference in the field at `offset` of the object at `object`.
    fn reference(&self, m: &dyn RemoteMemory, object: u64, offset: u64) -> Option<u64> {
        let at = object.checked_add(offset)?;
        let oop = match self.narrow {
            Some((base, shift)) => base.wrapping_add(u64::from(m.i32(at).ok()? as u32) << shift),
            None => m.u64(at).ok()?,
        };
        (oop != 0).then_some(oop)
    }

    /// The thread's name (`java.lang.Thread.name`, a `String`: Latin-1 or UTF-16 bytes).
    pub fn name(&self, m: &dyn RemoteMemory, thread: u64) -> Option<String> {
        let string = self.reference(m, self.thread_oop(m, thread)?, self.name)?;
        let value = self.reference(m, string, self.value)?;
        let mut coder = [0u8; 1];
        m.read(string.checked_add(self.coder)?, &mut coder).ok()?;
        let len = u64::from(m.i32(value.checked_add(self.array_length)?).ok()? as u32);
        let utf16 = coder[0] == 1;
        let bytes = len.min(if utf16 { 2 * MAX_NAME } else { MAX_NAME });
        let mut body = vec![0u8; bytes as usize];
        m.read(value.checked_add(self.array_data)?, &mut body).ok()?;
        Some(match utf16 {
            true => {
                let units: Vec<u16> = body.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                String::from_utf16_lossy(&units)
            }
            false => body.iter().map(|&b| char::from(b)).collect(),
        })
    }

    /// `java.lang.Thread.State` as `jcmd Thread.print` writes it (`TIMED_WAITING (sleeping)`).
    pub fn state(&self, m: &dyn RemoteMemory, thread: u64) -> Option<&'static str> {
        let oop = self.thread_oop(m, thread)?;
        let at = match self.status.as_ref()? {
            Status::Thread(offset) => oop.checked_add(*offset)?,
            Status::Holder(holder, offset) => self.reference(m, oop, *holder)?.checked_add(*offset)?,
        };
        state_of(m.i32(at).ok()?)
    }
}

/// The name of a `JavaThreadStatus` value: JVMTI's thread state bits.
fn state_of(status: i32) -> Option<&'static str> {
    const ALIVE: i32 = 0x1;
    const TERMINATED: i32 = 0x2;
    const RUNNABLE: i32 = 0x4;
    const WAITING_INDEFINITELY: i32 = 0x10;
    const WAITING_WITH_TIMEOUT: i32 = 0x20;
    const SLEEPING: i32 = 0x40;
    const IN_OBJECT_WAIT: i32 = 0x100;
    const PARKED: i32 = 0x200;
    const BLOCKED_ON_MONITOR_ENTER: i32 = 0x400;
    let timed = status & WAITING_WITH_TIMEOUT != 0;
    Some(match status {
        0 => "NEW",
        _ if status & TERMINATED != 0 => "TERMINATED",
        _ if status & ALIVE == 0 => return None,
        _ if status & RUNNABLE != 0 => "RUNNABLE",
        _ if status & BLOCKED_ON_MONITOR_ENTER != 0 => "BLOCKED (on object monitor)",
        _ if status & SLEEPING != 0 => "TIMED_WAITING (sleeping)",
        _ if status & IN_OBJECT_WAIT != 0 && timed => "TIMED_WAITING (on object monitor)",
        _ if status & IN_OBJECT_WAIT != 0 => "WAITING (on object monitor)",
        _ if status & PARKED != 0 && timed => "TIMED_WAITING (parking)",
        _ if status & PARKED != 0 => "WAITING (parking)",
        _ if status & WAITING_INDEFINITELY != 0 => "WAITING",
        _ if timed => "TIMED_WAITING",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::state_of;

    #[test]
    fn thread_states_read_as_jcmd_writes_them() {
        assert_eq!(state_of(0), Some("NEW"));
        assert_eq!(state_of(0x5), Some("RUNNABLE"));
        assert_eq!(state_of(0xe1), Some("TIMED_WAITING (sleeping)"));
        assert_eq!(state_of(0x191), Some("WAITING (on object monitor)"));
        assert_eq!(state_of(0x1a1), Some("TIMED_WAITING (on object monitor)"));
        assert_eq!(state_of(0x291), Some("WAITING (parking)"));
        assert_eq!(state_of(0x2a1), Some("TIMED_WAITING (parking)"));
        assert_eq!(state_of(0x401), Some("BLOCKED (on object monitor)"));
        assert_eq!(state_of(0x2), Some("TERMINATED"));
        assert_eq!(state_of(0x8), None, "not alive, not ended: garbage");
    }
}
