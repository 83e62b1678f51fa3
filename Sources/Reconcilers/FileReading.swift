#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif
public import YAML

/// Reads whole files with POSIX calls, turning failures into diagnostics that name the file.
public enum FileReading {
    /// Files larger than this are refused before reading: no desired state is that big.
    public static let maxSize = 16 << 20

    public static func read(_ path: String, maxSize: Int = FileReading.maxSize) throws(DiagnosticsError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure(path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw failure(path, "cannot stat: \(String(cString: strerror(errno)))") }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw failure(path, "is a directory, not a file") }
        return try POSIXFile.readAll(fd, limit: maxSize) { code in
            code == EFBIG ? failure(path, "larger than \(maxSize >> 20) MiB; not a desired-state file")
                : failure(path, "cannot read: \(String(cString: strerror(code)))")
        }
    }

    private static func failure(_ path: String, _ message: String) -> DiagnosticsError {
        DiagnosticsError([Diagnostic(file: path, mark: .start, code: .io, message: message)])
    }
}
