//! `libtally_jvm.so`: a JVMTI agent (`java -agentpath:/path/libtally_jvm.so`) that writes the
//! JVM's perf map, `/tmp/perf-<pid>.map`, while it runs, with the Java methods HotSpot's C2
//! inlined at each call in compiled code, so that a heap profile's stacks through compiled Java
//! name the methods that were inlined, not only the one they were compiled into.
//!
//! The map is opened (and emptied) when the agent loads. Then, for each event, under one lock
//! and in one `write`:
//! - `CompiledMethodLoad` (a method compiled, or, through `GenerateEvents` at `VMInit`, one
//!   compiled before): the method's line as the JVM's own `-XX:+DumpPerfMapAtExit` writes it,
//!   `START SIZE void java.util.zip.GZIPOutputStream.<init>(java.io.OutputStream)`, then from
//!   the event's inline record, for each pc where more than one Java frame is live (a call from
//!   inlined code), a 2-byte line `[pc - 1, pc + 1)` naming the chain, the compiled method first:
//!   `GzipLogger.logLeaky->java.util.zip.GZIPOutputStream.<init>->java.util.zip.Deflater.<init>`.
//!   A pc of a call is its return address, and a profiler looks up a return address minus one,
//!   so the short line covers both; perf map readers let a later line win over an earlier one it
//!   overlaps, so it wins over the method's line;
//! - `DynamicCodeGenerated` (the interpreter, stubs, adapters): `START SIZE <name>` as the JVM
//!   writes it (`Interpreter`, `StubRoutines (1)`). JVMTI reports the JVM's stubs one by one
//!   (`call_stub`, 63 bytes) where the JVM's own map has the blobs holding them (`StubRoutines
//!   (1)`, 30,000 bytes), and some blobs not at all (`vtable chunks`, `MethodHandles adapters`
//!   but its first byte): code entered by a jump, not a call, so no return address in a stack
//!   lies there; compiled methods match the JVM's map line for line.
//!
//! Code the JVM frees and reuses is written again when it is reused; later lines win. The JVM's
//! own `-XX:+DumpPerfMapAtExit` rewrites the file at exit (it truncates it), so it must not be
//! given with the agent.
//!
//! The agent allocates (it runs in the JVM's threads, never in a profiler's recording path) and
//! never unwinds into the JVM: each callback catches panics, and nothing in it is meant to
//! panic. When something fails (no JVMTI, the map cannot be written), it prints one line on
//! stderr and the JVM runs on without it.
//!
//! The modules, bottom-up, neither using the other: [`jvmti`] — the pieces of `jvmti.h` used,
//! declared by hand; [`names`] — Java names as the JVM's own perf map writes them. This file is
//! the agent: its entry points and event callbacks.

pub mod jvmti;
pub mod names;

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::fs::File;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use jvmti::{Env, Jint, JvmtiError, MethodId};
use names::MethodNames;

/// The open map and the names of the methods seen so far (a `jmethodID` stays valid, and
/// names the same method, for the JVM's life).
struct Writer {
    file: File,
    names: HashMap<usize, MethodNames>,
    /// Whether a write failed already (said once).
    failed: bool,
}

static WRITER: Mutex<Option<Writer>> = Mutex::new(None);

/// The JVM loads the agent at startup (`-agentpath:`).
///
/// # Safety
/// `vm` is the JVM's `JavaVM *` (the JVM calls this).
#[no_mangle]
pub unsafe extern "C" fn Agent_OnLoad(
    vm: jvmti::JavaVm,
    _options: *mut c_char,
    _reserved: *mut c_void,
) -> Jint {
    // SAFETY: the JVM passes its own `JavaVM *`.
    guard(|| unsafe { start(vm, false) });
    jvmti::JNI_OK
}

/// The JVM loads the agent into a running JVM (`jcmd <pid> JVMTI.agent_load`).
///
/// # Safety
/// `vm` is the JVM's `JavaVM *` (the JVM calls this).
#[no_mangle]
pub unsafe extern "C" fn Agent_OnAttach(
    vm: jvmti::JavaVm,
    _options: *mut c_char,
    _reserved: *mut c_void,
) -> Jint {
    // SAFETY: the JVM passes its own `JavaVM *`.
    guard(|| unsafe { start(vm, true) });
    jvmti::JNI_OK
}

/// Runs `f`, keeping a panic from unwinding into the JVM.
fn guard(f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        say("internal error; the perf map may be incomplete");
    }
}

/// One line on stderr.
fn say(what: &str) {
    let _ = writeln!(std::io::stderr(), "tally-jvm-agent: {what}");
}

/// Gets a JVMTI environment, opens the map and asks for the events; `live`: the JVM runs already
/// (attach), so the code compiled so far is asked for now rather than at `VMInit`.
///
/// # Safety
/// `vm` is the JVM's `JavaVM *`.
unsafe fn start(vm: jvmti::JavaVm, live: bool) {
    let path = format!("/tmp/perf-{}.map", std::process::id());
    let file = File::create(&path).and_then(|_| File::options().append(true).open(&path));
    let file = match file {
        Ok(file) => file,
        Err(e) => return say(&format!("{path}: {e}; no perf map")),
    };
    let mut env: *mut c_void = std::ptr::null_mut();
    // SAFETY: `vm` points to the JVM's invoke interface, whose `GetEnv` stores an environment
    // of the asked version in `env` when it returns JNI_OK.
    let got = unsafe { ((**vm).get_env)(vm, &mut env, jvmti::VERSION_1_2) };
    if got != jvmti::JNI_OK || env.is_null() {
        return say(&format!(
            "no JVMTI 1.2 environment (GetEnv: {got}); {path} stays empty"
        ));
    }
    let env = env as Env;
    *lock() = Some(Writer {
        file,
        names: HashMap::new(),
        failed: false,
    });
    let mut capabilities = jvmti::Capabilities::default();
    capabilities.words[0] |= jvmti::CAN_GENERATE_COMPILED_METHOD_LOAD_EVENTS;
    let callbacks = jvmti::EventCallbacks::new(vm_init, compiled_method_load, dynamic_code_generated);
    // SAFETY: `env` is a live JVMTI environment (GetEnv above); the structures passed are laid
    // out as jvmti.h declares them (jvmti.rs) and the JVM copies them before returning; the
    // variadic SetEventNotificationMode takes no arguments after the thread (null: all threads).
    let result = unsafe {
        let functions = &**env;
        check(
            "AddCapabilities",
            (functions.add_capabilities)(env, &capabilities),
        )
        .and_then(|_| {
            let size = size_of::<jvmti::EventCallbacks>() as Jint;
            check(
                "SetEventCallbacks",
                (functions.set_event_callbacks)(env, &callbacks, size),
            )
        })
        .and_then(|_| {
            [
                jvmti::EVENT_VM_INIT,
                jvmti::EVENT_COMPILED_METHOD_LOAD,
                jvmti::EVENT_DYNAMIC_CODE_GENERATED,
            ]
            .into_iter()
            .try_for_each(|event| {
                let mode =
                    (functions.set_event_notification_mode)(env, jvmti::ENABLE, event, std::ptr::null_mut());
                check("SetEventNotificationMode", mode)
            })
        })
    };
    match result {
        Err(e) => say(&format!("{e}; {path} stays without compiled methods")),
        // SAFETY: the environment is live and the JVM too (attach).
        Ok(()) if live => unsafe { generate_events(env) },
        Ok(()) => {}
    }
}

/// `Err` with the function's name unless `error` is 0.
fn check(function: &str, error: JvmtiError) -> Result<(), String> {
    match error {
        0 => Ok(()),
        error => Err(format!("JVMTI {function} failed (error {error})")),
    }
}

/// Asks for the events of the code generated and compiled so far.
///
/// # Safety
/// `env` is a live JVMTI environment in the live phase.
unsafe fn generate_events(env: Env) {
    for event in [
        jvmti::EVENT_DYNAMIC_CODE_GENERATED,
        jvmti::EVENT_COMPILED_METHOD_LOAD,
    ] {
        // SAFETY: as the caller promises.
        let error = unsafe { ((**env).generate_events)(env, event) };
        if let Err(e) = check("GenerateEvents", error) {
            say(&e);
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<Writer>> {
    WRITER.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

unsafe extern "C" fn vm_init(env: Env, _jni: *mut c_void, _thread: *mut c_void) {
    // SAFETY: the JVM calls this in the live phase with its environment.
    guard(|| unsafe { generate_events(env) });
}

unsafe extern "C" fn dynamic_code_generated(
    _env: Env,
    name: *const c_char,
    address: *const c_void,
    length: Jint,
) {
    guard(|| {
        if name.is_null() {
            return;
        }
        // SAFETY: the JVM passes a NUL-terminated name, valid during the call.
        let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        let line = format!(
            "{:#018x} {:#018x} {}\n",
            address as usize,
            length.max(0),
            one_line(&name)
        );
        if let Some(writer) = lock().as_mut() {
            writer.write(line.as_bytes());
        }
    });
}

unsafe extern "C" fn compiled_method_load(
    env: Env,
    method: MethodId,
    code_size: Jint,
    code_address: *const c_void,
    _map_length: Jint,
    _map: *const c_void,
    compile_info: *const c_void,
) {
    guard(|| {
        let mut guard = lock();
        let Some(writer) = guard.as_mut() else {
            return;
        };
        let mut text = String::new();
        // SAFETY: the JVM calls this with its environment and a live method id.
        let full = unsafe { writer.names(env, method) }.full.clone();
        text += &format!(
            "{:#018x} {:#018x} {full}\n",
            code_address as usize,
            code_size.max(0)
        );
        // SAFETY: `compile_info` is the event's list of records, valid during the call.
        unsafe { writer.inline_lines(env, compile_info.cast(), &mut text) };
        writer.write(text.as_bytes());
    });
}

impl Writer {
    /// The names of `method`, from the cache or JVMTI.
    ///
    /// # Safety
    /// `env` is a live JVMTI environment and `method` a method id of its JVM.
    unsafe fn names(&mut self, env: Env, method: MethodId) -> &MethodNames {
        self.names
            .entry(method as usize)
            // SAFETY: as the caller promises.
            .or_insert_with(|| unsafe { method_names(env, method) })
    }

    /// Appends to `text` a line per pc of the inline records in `records` where the Java
    /// frames are more than one.
    ///
    /// # Safety
    /// `env` is a live JVMTI environment; `records` null or a `compile_info` list the JVM
    /// passed to the current `CompiledMethodLoad` event.
    unsafe fn inline_lines(&mut self, env: Env, mut records: *const jvmti::RecordHeader, text: &mut String) {
        while !records.is_null() {
            // SAFETY: a non-null record of the event's list.
            let header = unsafe { &*records };
            if header.kind == jvmti::CMLR_INLINE_INFO {
                // SAFETY: a record of kind JVMTI_CMLR_INLINE_INFO is an inline record.
                let record = unsafe { &*records.cast::<jvmti::InlineRecord>() };
                let pcs = match (record.pcs.is_null(), usize::try_from(record.pc_count)) {
                    // SAFETY: `pcs` holds `pc_count` entries.
                    (false, Ok(count)) => unsafe { std::slice::from_raw_parts(record.pcs, count) },
                    _ => &[],
                };
                for pc in pcs {
                    let frames = match (pc.methods.is_null(), usize::try_from(pc.frame_count)) {
                        // SAFETY: `methods` holds `frame_count` method ids.
                        (false, Ok(count)) if count > 1 => unsafe {
                            std::slice::from_raw_parts(pc.methods, count)
                        },
                        _ => continue,
                    };
                    let mut chain = String::new();
                    for (i, &method) in frames.iter().rev().enumerate() {
                        if i > 0 {
                            chain += "->";
                        }
                        // SAFETY: `method` is a method id the JVM passed.
                        chain += &unsafe { self.names(env, method) }.short;
                    }
                    let start = (pc.pc as usize).saturating_sub(1);
                    *text += &format!("{start:#018x} {:#018x} {chain}\n", 2);
                }
            }
            records = header.next;
        }
    }

    /// Writes `bytes` at the end of the map, saying once if that fails.
    fn write(&mut self, bytes: &[u8]) {
        if let Err(e) = self.file.write_all(bytes) {
            if !self.failed {
                self.failed = true;
                say(&format!("writing the perf map: {e}"));
            }
        }
    }
}

/// The names of `method` from JVMTI; `<unknown>` parts for what it does not say.
///
/// # Safety
/// `env` is a live JVMTI environment and `method` a method id of its JVM.
unsafe fn method_names(env: Env, method: MethodId) -> MethodNames {
    let mut name: *mut c_char = std::ptr::null_mut();
    let mut descriptor: *mut c_char = std::ptr::null_mut();
    let mut class: jvmti::Class = std::ptr::null_mut();
    let mut signature: *mut c_char = std::ptr::null_mut();
    // SAFETY: the caller's promise; each out-pointer is a local the function writes.
    unsafe {
        let functions = &**env;
        (functions.get_method_name)(env, method, &mut name, &mut descriptor, std::ptr::null_mut());
        if (functions.get_method_declaring_class)(env, method, &mut class) == 0 && !class.is_null() {
            (functions.get_class_signature)(env, class, &mut signature, std::ptr::null_mut());
        }
    }
    // SAFETY: each pointer is null or a NUL-terminated string JVMTI allocated, freed once here.
    let [name, descriptor, signature] =
        [name, descriptor, signature].map(|text| unsafe { take_string(env, text) });
    MethodNames::new(
        signature.as_deref().unwrap_or("<unknown>"),
        name.as_deref().unwrap_or("<unknown>"),
        descriptor.as_deref().unwrap_or(""),
    )
}

/// The string JVMTI allocated at `text`, which it then frees.
///
/// # Safety
/// `text` is null or a NUL-terminated string JVMTI allocated in `env` and nothing else frees.
unsafe fn take_string(env: Env, text: *mut c_char) -> Option<String> {
    if text.is_null() {
        return None;
    }
    // SAFETY: as the caller promises.
    unsafe {
        let string = CStr::from_ptr(text).to_string_lossy().into_owned();
        ((**env).deallocate)(env, text.cast());
        Some(one_line(&string).into_owned())
    }
}

/// `text` with line breaks as spaces (a map has one entry per line).
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\n', '\r']) {
        text.replace(['\n', '\r'], " ").into()
    } else {
        text.into()
    }
}
