//! The memory of cdeploy's long-running servers.

/// Turns transparent huge pages off for this process and what it starts (the flag is
/// inherited). mimalloc asks for them on its arenas, and the kernel's khugepaged then
/// fills each sparsely used 2 MiB region in: after 50 small builds `cdeploy-server`
/// held 170-210 MiB, growing while idle, instead of about 55 (measured). A kernel
/// without the setting changes nothing.
pub fn no_transparent_huge_pages() {
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}
