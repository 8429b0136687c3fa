//! The pieces of the JVM Tool Interface (`jvmti.h`, `jvmticmlr.h` of JDK 17) the agent uses,
//! declared by hand: the JVM's invoke interface (to get a JVMTI environment), the JVMTI
//! function table up to the slots used, the capabilities bit field, the event callbacks table
//! and the compiled method's inline record.
//!
//! The tables are arrays of function pointers: a slot numbered `N` in `jvmti.h`'s comments
//! (`/* 64 : Get Method Name (and Signature) */`) is entry `N - 1`. The slots the agent does not
//! call are opaque padding here; `const` asserts check the offsets of the ones it does.

use std::ffi::{c_char, c_void};
use std::mem::offset_of;

/// `jint`.
pub type Jint = i32;
/// `jvmtiError` (0: none).
pub type JvmtiError = u32;
/// `jmethodID`.
pub type MethodId = *mut c_void;
/// `jclass` (a JNI local reference).
pub type Class = *mut c_void;
/// `jvmtiEnv *`: a pointer to the pointer to the function table.
pub type Env = *mut *const Interface;
/// `JavaVM *`: a pointer to the pointer to the invoke interface.
pub type JavaVm = *mut *const InvokeInterface;

/// `JNI_OK`.
pub const JNI_OK: Jint = 0;
/// `JVMTI_VERSION_1_2`.
pub const VERSION_1_2: Jint = 0x3001_0200;
/// `JVMTI_ENABLE`.
pub const ENABLE: u32 = 1;
/// `JVMTI_EVENT_VM_INIT`.
pub const EVENT_VM_INIT: u32 = 50;
/// `JVMTI_EVENT_COMPILED_METHOD_LOAD`.
pub const EVENT_COMPILED_METHOD_LOAD: u32 = 68;
/// `JVMTI_EVENT_DYNAMIC_CODE_GENERATED`.
pub const EVENT_DYNAMIC_CODE_GENERATED: u32 = 70;
/// `JVMTI_CMLR_INLINE_INFO`: the kind of a [`InlineRecord`].
pub const CMLR_INLINE_INFO: u32 = 2;

/// A slot the agent never calls.
type Slot = *const c_void;

/// `JNIInvokeInterface_`.
#[repr(C)]
pub struct InvokeInterface {
    _reserved: [Slot; 3],
    _destroy_java_vm: Slot,
    _attach_current_thread: Slot,
    _detach_current_thread: Slot,
    /// `GetEnv(vm, &env, version)`.
    pub get_env: unsafe extern "C" fn(JavaVm, *mut *mut c_void, Jint) -> Jint,
}

/// `jvmtiInterface_1`, up to slot 142 (`AddCapabilities`).
#[repr(C)]
pub struct Interface {
    _slot_1: Slot,
    /// 2: `SetEventNotificationMode(env, mode, event, thread, ...)`.
    pub set_event_notification_mode: unsafe extern "C" fn(Env, u32, u32, *mut c_void, ...) -> JvmtiError,
    _slots_3_to_46: [Slot; 44],
    /// 47: `Deallocate(env, mem)`.
    pub deallocate: unsafe extern "C" fn(Env, *mut u8) -> JvmtiError,
    /// 48: `GetClassSignature(env, class, &signature, &generic)`.
    pub get_class_signature:
        unsafe extern "C" fn(Env, Class, *mut *mut c_char, *mut *mut c_char) -> JvmtiError,
    _slots_49_to_63: [Slot; 15],
    /// 64: `GetMethodName(env, method, &name, &signature, &generic)`.
    pub get_method_name: unsafe extern "C" fn(
        Env,
        MethodId,
        *mut *mut c_char,
        *mut *mut c_char,
        *mut *mut c_char,
    ) -> JvmtiError,
    /// 65: `GetMethodDeclaringClass(env, method, &class)`.
    pub get_method_declaring_class: unsafe extern "C" fn(Env, MethodId, *mut Class) -> JvmtiError,
    _slots_66_to_121: [Slot; 56],
    /// 122: `SetEventCallbacks(env, callbacks, size)`.
    pub set_event_callbacks: unsafe extern "C" fn(Env, *const EventCallbacks, Jint) -> JvmtiError,
    /// 123: `GenerateEvents(env, event)`.
    pub generate_events: unsafe extern "C" fn(Env, u32) -> JvmtiError,
    _slots_124_to_141: [Slot; 18],
    /// 142: `AddCapabilities(env, capabilities)`.
    pub add_capabilities: unsafe extern "C" fn(Env, *const Capabilities) -> JvmtiError,
}

/// The byte offset of slot `n` (numbered as in `jvmti.h`).
const fn slot(n: usize) -> usize {
    (n - 1) * size_of::<Slot>()
}
const _: () = {
    assert!(offset_of!(Interface, set_event_notification_mode) == slot(2));
    assert!(offset_of!(Interface, deallocate) == slot(47));
    assert!(offset_of!(Interface, get_class_signature) == slot(48));
    assert!(offset_of!(Interface, get_method_name) == slot(64));
    assert!(offset_of!(Interface, get_method_declaring_class) == slot(65));
    assert!(offset_of!(Interface, set_event_callbacks) == slot(122));
    assert!(offset_of!(Interface, generate_events) == slot(123));
    assert!(offset_of!(Interface, add_capabilities) == slot(142));
    assert!(offset_of!(InvokeInterface, get_env) == 6 * size_of::<Slot>());
};

/// `jvmtiCapabilities`: 128 one-bit fields, filled from the least significant bit of the first
/// word up (as GCC lays out bit fields on x86-64 and AArch64).
#[repr(C)]
#[derive(Default)]
pub struct Capabilities {
    /// The bits.
    pub words: [u32; 4],
}

/// Bit of `can_generate_compiled_method_load_events` (the 28th field) in `words[0]`.
pub const CAN_GENERATE_COMPILED_METHOD_LOAD_EVENTS: u32 = 1 << 27;

/// `jvmtiEventVMInit`.
pub type VmInit = unsafe extern "C" fn(Env, *mut c_void, *mut c_void);
/// `jvmtiEventCompiledMethodLoad(env, method, code_size, code_addr, map_length, map,
/// compile_info)`.
pub type CompiledMethodLoad =
    unsafe extern "C" fn(Env, MethodId, Jint, *const c_void, Jint, *const c_void, *const c_void);
/// `jvmtiEventDynamicCodeGenerated(env, name, address, length)`.
pub type DynamicCodeGenerated = unsafe extern "C" fn(Env, *const c_char, *const c_void, Jint);

/// `jvmtiEventCallbacks`: one slot per event, events 50 to 86.
#[repr(C)]
pub struct EventCallbacks {
    /// 50.
    pub vm_init: Option<VmInit>,
    _events_51_to_67: [Slot; 17],
    /// 68.
    pub compiled_method_load: Option<CompiledMethodLoad>,
    _event_69: Slot,
    /// 70.
    pub dynamic_code_generated: Option<DynamicCodeGenerated>,
    _events_71_to_86: [Slot; 16],
}
const _: () = {
    assert!(size_of::<EventCallbacks>() == (86 - 50 + 1) * size_of::<Slot>());
    assert!(offset_of!(EventCallbacks, compiled_method_load) == (68 - 50) * size_of::<Slot>());
    assert!(offset_of!(EventCallbacks, dynamic_code_generated) == (70 - 50) * size_of::<Slot>());
};

impl EventCallbacks {
    /// The table with these three events' callbacks and no others.
    pub fn new(
        vm_init: VmInit,
        compiled_method_load: CompiledMethodLoad,
        dynamic_code_generated: DynamicCodeGenerated,
    ) -> EventCallbacks {
        EventCallbacks {
            vm_init: Some(vm_init),
            _events_51_to_67: [std::ptr::null(); 17],
            compiled_method_load: Some(compiled_method_load),
            _event_69: std::ptr::null(),
            dynamic_code_generated: Some(dynamic_code_generated),
            _events_71_to_86: [std::ptr::null(); 16],
        }
    }
}

/// `jvmtiCompiledMethodLoadRecordHeader`: the head of each record of a `compile_info` list.
#[repr(C)]
pub struct RecordHeader {
    /// `jvmtiCMLRKind`.
    pub kind: u32,
    /// The record's major version.
    pub major_version: Jint,
    /// Its minor version.
    pub minor_version: Jint,
    /// The next record, or null.
    pub next: *const RecordHeader,
}

/// `PCStackInfo`: the Java frames at one pc of compiled code.
#[repr(C)]
pub struct PcStackInfo {
    /// The pc (for a call, the return address).
    pub pc: *const c_void,
    /// Number of frames, the innermost (an inlined callee) first, the last being the compiled
    /// method.
    pub frame_count: Jint,
    /// `frame_count` methods.
    pub methods: *const MethodId,
    /// `frame_count` bytecode indices.
    pub bcis: *const Jint,
}

/// `jvmtiCompiledMethodLoadInlineRecord` (kind [`CMLR_INLINE_INFO`]).
#[repr(C)]
pub struct InlineRecord {
    /// Its header.
    pub header: RecordHeader,
    /// Number of entries in `pcs`.
    pub pc_count: Jint,
    /// The pcs.
    pub pcs: *const PcStackInfo,
}
