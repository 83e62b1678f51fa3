#if canImport(Glibc)
internal import Glibc
#endif
internal import CCurl
internal import Synchronization

/// Why a download failed: the server's status, or the transfer itself (cut off, stalled,
/// refused), with how much had arrived.
public struct DownloadError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The server answered with this status (404 for a version that does not exist).
        case status(Int)
        /// The transfer broke: libcurl's error, such as a connection closed mid-way.
        case transfer
        /// Writing what arrived failed (disk full).
        case write
        /// Over the size limit.
        case tooLarge
    }

    public var kind: Kind
    public var message: String
    public var received: Int64

    public var description: String { message }
}

/// Fetches one URL into a file with libcurl, following redirects (GitHub release assets
/// redirect to a CDN), with a connect timeout and stall detection instead of a total
/// timeout, so a large binary on a slow link still arrives. Each piece is handed to a
/// callback (for hashing) before it is written. Runs on a thread of its own.
public enum HTTPDownload {
    public struct Progress: Sendable {
        public var received: Int64
        /// From Content-Length; 0 when the server did not say.
        public var total: Int64
    }

    /// - Parameters:
    ///   - fd: an open file to write to, from its current offset.
    ///   - onChunk: sees every piece of the body, in order.
    ///   - progress: called about every 8 MiB.
    /// - Returns: the number of bytes written.
    ///   - maxSize: the most bytes accepted: a larger announced length fails at once, a longer
    ///     body fails when it passes the limit (a hostile or broken mirror cannot fill the disk).
    public static func fetch(_ url: String, to fd: Int32, connectTimeout: Duration = .seconds(20), maxSize: Int64 = 1 << 30,
                             onChunk: @escaping @Sendable ([UInt8]) -> Void,
                             progress: @escaping @Sendable (Progress) -> Void = { _ in }) async throws(DownloadError) -> Int64 {
        CurlGlobal.initialize()
        let worker = Worker()
        defer { worker.stop() }
        let result: Result<Int64, DownloadError> = await withCheckedContinuation { continuation in
            worker.submit {
                continuation.resume(returning: perform(url, fd: fd, connectTimeout: connectTimeout, maxSize: maxSize, onChunk: onChunk,
                                                       progress: progress))
            }
        }
        return try result.get()
    }

    final class Sink: @unchecked Sendable {
        let fd: Int32
        let onChunk: @Sendable ([UInt8]) -> Void
        let progress: @Sendable (Progress) -> Void
        var received: Int64 = 0
        var reported: Int64 = 0
        var writeErrno: Int32 = 0
        var handle: UnsafeMutableRawPointer?
        var maxSize: Int64 = .max
        var tooLarge = false

        init(fd: Int32, onChunk: @escaping @Sendable ([UInt8]) -> Void, progress: @escaping @Sendable (Progress) -> Void) {
            self.fd = fd
            self.onChunk = onChunk
            self.progress = progress
        }
    }

    static func perform(_ url: String, fd: Int32, connectTimeout: Duration, maxSize: Int64, onChunk: @escaping @Sendable ([UInt8]) -> Void,
                        progress: @escaping @Sendable (Progress) -> Void) -> Result<Int64, DownloadError> {
        guard let h = curl_easy_init() else { return .failure(DownloadError(kind: .transfer, message: "curl_easy_init failed", received: 0)) }
        let sink = Sink(fd: fd, onChunk: onChunk, progress: progress)
        sink.handle = h
        sink.maxSize = maxSize
        let unmanaged = Unmanaged.passRetained(sink)
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE))
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
        // One cleanup, in this order: the handle (which may still write to the error buffer
        // and call back into the sink while it closes) before what it points to.
        defer {
            curl_easy_cleanup(h)
            errorBuffer.deallocate()
            unmanaged.release()
        }
        var options: [(CURLcode, String)] = [
            (CCurl_setoptString(h, CURLOPT_URL, url), "URL"),
            (CCurl_setoptLong(h, CURLOPT_FOLLOWLOCATION, 1), "FOLLOWLOCATION"),
            (CCurl_setoptLong(h, CURLOPT_MAXREDIRS, 5), "MAXREDIRS"),
            (CCurl_setoptString(h, CURLOPT_PROTOCOLS_STR, "http,https"), "PROTOCOLS_STR"),
            // A redirect may only lead to HTTPS.
            (CCurl_setoptString(h, CURLOPT_REDIR_PROTOCOLS_STR, "https"), "REDIR_PROTOCOLS_STR"),
            (CCurl_setoptLong(h, CURLOPT_FAILONERROR, 1), "FAILONERROR"),
            (CCurl_setoptLong(h, CURLOPT_NOSIGNAL, 1), "NOSIGNAL"),
            (CCurl_setoptLong(h, CURLOPT_CONNECTTIMEOUT_MS, Int(connectTimeout.components.seconds * 1000)), "CONNECTTIMEOUT_MS"),
            // Stalled: under 1 KiB/s for a minute.
            (CCurl_setoptLong(h, CURLOPT_LOW_SPEED_LIMIT, 1024), "LOW_SPEED_LIMIT"),
            (CCurl_setoptLong(h, CURLOPT_LOW_SPEED_TIME, 60), "LOW_SPEED_TIME"),
            (CCurl_setoptString(h, CURLOPT_USERAGENT, "nodeagent"), "USERAGENT"),
            (CCurl_setoptLong(h, CURLOPT_MAXFILESIZE, Int(min(maxSize, Int64(Int32.max)))), "MAXFILESIZE"),
            (CCurl_setoptPointer(h, CURLOPT_ERRORBUFFER, errorBuffer), "ERRORBUFFER"),
        ]
        options.append((CCurl_setoptWriteFunction(h, writeFile), "WRITEFUNCTION"))
        options.append((CCurl_setoptPointer(h, CURLOPT_WRITEDATA, unmanaged.toOpaque()), "WRITEDATA"))
        if let failed = options.first(where: { $0.0 != CURLE_OK }) {
            return .failure(DownloadError(kind: .transfer, message: "libcurl refused option \(failed.1): \(String(cString: curl_easy_strerror(failed.0)))",
                                          received: 0))
        }
        let code = curl_easy_perform(h)
        var status = 0
        _ = CCurl_getinfoLong(h, CURLINFO_RESPONSE_CODE, &status)
        if code == CURLE_OK { return .success(sink.received) }
        if sink.tooLarge || code == CURLE_FILESIZE_EXCEEDED {
            return .failure(DownloadError(kind: .tooLarge, message: "\(url) is larger than \(maxSize) bytes: refused", received: sink.received))
        }
        if code == CURLE_HTTP_RETURNED_ERROR {
            return .failure(DownloadError(kind: .status(status), message: "\(url) answered HTTP \(status)", received: sink.received))
        }
        if code == CURLE_WRITE_ERROR, sink.writeErrno != 0 {
            return .failure(DownloadError(kind: .write, message: "cannot write the download: \(String(cString: strerror(sink.writeErrno)))",
                                          received: sink.received))
        }
        let detail = errorBuffer.pointee != 0 ? String(cString: errorBuffer) : String(cString: curl_easy_strerror(code))
        return .failure(DownloadError(kind: .transfer, message: "\(url): \(detail) (after \(sink.received) bytes)", received: sink.received))
    }
}

/// libcurl's write callback: hands the piece on, then writes it all (or fails the transfer).
private let writeFile: CCurl_WriteCallback = { pointer, size, count, context in
    guard let pointer, let context else { return 0 }
    let sink = Unmanaged<HTTPDownload.Sink>.fromOpaque(context).takeUnretainedValue()
    let n = size * count
    let bytes = pointer.withMemoryRebound(to: UInt8.self, capacity: n) { Array(UnsafeBufferPointer(start: $0, count: n)) }
    guard sink.received + Int64(n) <= sink.maxSize else {
        sink.tooLarge = true
        return 0
    }
    sink.onChunk(bytes)
    var offset = 0
    while offset < n {
        let w = bytes[offset...].withUnsafeBytes { write(sink.fd, $0.baseAddress, $0.count) }
        if w < 0 {
            if errno == EINTR { continue }
            sink.writeErrno = errno
            return 0
        }
        offset += w
    }
    sink.received += Int64(n)
    if sink.received - sink.reported >= 8 << 20 {
        sink.reported = sink.received
        var total: Double = 0
        if let h = sink.handle { _ = CCurl_getinfoDouble(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD, &total) }
        sink.progress(HTTPDownload.Progress(received: sink.received, total: Int64(max(total, 0))))
    }
    return n
}
