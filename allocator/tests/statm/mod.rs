//! This process's memory figures from `/proc/self/statm`, read without allocating (the tests
//! that use them measure what the allocator does, so reading must not allocate through it).

/// Field `index` of `/proc/self/statm` in bytes: 0 the address space mapped (`VmSize`), 1 the
/// resident set.
pub fn statm_bytes(index: usize) -> usize {
    let mut buf = [0u8; 128];
    // SAFETY: plain system calls on a path literal and a stack buffer.
    let n = unsafe {
        let fd = libc::open(c"/proc/self/statm".as_ptr(), libc::O_RDONLY);
        assert!(fd >= 0);
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    assert!(n > 0);
    let pages: usize = buf[..n as usize]
        .split(|&b| b == b' ')
        .nth(index)
        .and_then(|f| std::str::from_utf8(f).ok())
        .and_then(|f| f.trim().parse().ok())
        .unwrap_or_else(|| panic!("no field {index} in /proc/self/statm"));
    pages * 4096
}
