internal import CCurl
internal import Synchronization

/// An HTTP request to the API server: a path with its query, headers, body and timeout.
public struct HTTPRequest: Sendable {
    public var method: String
    /// Path and query, such as `/api/v1/namespaces?limit=500`.
    public var path: String
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]?
    public var timeout: Duration

    public init(_ method: String, _ path: String, headers: [(name: String, value: String)] = [], body: [UInt8]? = nil,
                timeout: Duration = .seconds(30)) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    /// Header names lowercased; the last value wins.
    public var headers: [String: String]
    public var body: [UInt8]
}

/// A streaming request answered with something other than 200.
public struct StreamStatusError: Error, Sendable {
    public var response: HTTPResponse
}

/// A transport failure: no HTTP response at all (connection refused, TLS refused, timeout).
public struct TransportError: Error, Sendable, CustomStringConvertible {
    /// libcurl's `CURLcode`.
    public var code: Int
    public var message: String
    public var isTimeout: Bool { code == 28 }
    public var description: String { "curl error \(code): \(message)" }
}

/// HTTPS to one API server through libcurl, with the kubeconfig's client certificate, key and
/// CA handed over as in-memory blobs (never temp files). TLS is always verified unless the
/// kubeconfig says `insecure-skip-tls-verify`.
///
/// Requests run one at a time on a dedicated thread that owns one curl handle, so the
/// connection is reused (keep-alive) and no blocking call ever runs on the cooperative pool.
public final class CurlTransport: Sendable {
    private let config: Kubeconfig
    private let worker = Worker()
    private let handle: HandleBox

    public init(config: Kubeconfig) {
        CurlGlobal.initialize()
        self.config = config
        handle = HandleBox()
    }

    deinit {
        let handle = self.handle
        worker.submit { handle.close() }
        worker.stop()
    }

    /// Opens a streaming request (a watch) on a connection of its own, handing on body bytes
    /// as they arrive. Ending the consuming loop (or cancelling its task) closes the connection
    /// within about a second, even when the server sends nothing.
    /// - Returns: the body in chunks; a non-200 answer ends the stream with its response as
    ///   `StreamStatusError`.
    public func stream(_ request: HTTPRequest) -> AsyncThrowingStream<[UInt8], any Error> {
        let config = self.config
        return AsyncThrowingStream { continuation in
            let sink = ResponseSink()
            sink.onChunk = { continuation.yield($0) }
            let worker = Worker()
            worker.submit {
                let handle = HandleBox()
                let result = handle.perform(request, config: config, sink: sink)
                handle.close()
                switch result {
                case .success(let response) where response.status == 200:
                    continuation.finish()
                case .success(let response):
                    continuation.finish(throwing: StreamStatusError(response: response))
                case .failure(let error):
                    continuation.finish(throwing: error)
                }
            }
            worker.stop()
            continuation.onTermination = { _ in sink.cancelled.store(true, ordering: .relaxed) }
        }
    }

    /// Sends one request and collects the whole response.
    public func send(_ request: HTTPRequest) async throws(TransportError) -> HTTPResponse {
        let config = self.config, handle = self.handle
        let result: Result<HTTPResponse, TransportError> = await withCheckedContinuation { continuation in
            worker.submit {
                continuation.resume(returning: handle.perform(request, config: config))
            }
        }
        return try result.get()
    }
}

/// Makes `curl_global_init` happen once, before any handle exists.
enum CurlGlobal {
    private static let done = Mutex(false)

    static func initialize() {
        done.withLock { done in
            if !done {
                curl_global_init(CCurl_globalDefault())
                done = true
            }
        }
    }
}

/// The curl easy handle of one connection. Touched only on its worker thread.
final class HandleBox: @unchecked Sendable {
    private var curl: UnsafeMutableRawPointer?

    func close() {
        if let curl { curl_easy_cleanup(curl) }
        curl = nil
    }

    func perform(_ request: HTTPRequest, config: Kubeconfig, sink: ResponseSink = ResponseSink()) -> Result<HTTPResponse, TransportError> {
        if curl == nil { curl = curl_easy_init() }
        guard let h = curl else { return .failure(TransportError(code: 2, message: "curl_easy_init failed")) }
        // reset keeps the connection cache: the next request reuses the open connection.
        curl_easy_reset(h)
        let unmanaged = Unmanaged.passRetained(sink)
        defer { unmanaged.release() }
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        do {
            try check(CCurl_setoptString(h, CURLOPT_URL, config.server + request.path), "URL")
            try check(CCurl_setoptLong(h, CURLOPT_NOSIGNAL, 1), "NOSIGNAL")
            try check(CCurl_setoptString(h, CURLOPT_CUSTOMREQUEST, request.method), "CUSTOMREQUEST")
            if request.method == "HEAD" { try check(CCurl_setoptLong(h, CURLOPT_NOBODY, 1), "NOBODY") }
            let ms = Int(request.timeout.components.seconds * 1000 + request.timeout.components.attoseconds / 1_000_000_000_000_000)
            try check(CCurl_setoptLong(h, CURLOPT_TIMEOUT_MS, ms), "TIMEOUT_MS")
            try check(CCurl_setoptLong(h, CURLOPT_CONNECTTIMEOUT_MS, min(ms, 10_000)), "CONNECTTIMEOUT_MS")
            try check(CCurl_setoptWriteFunction(h, writeBody), "WRITEFUNCTION")
            try check(CCurl_setoptPointer(h, CURLOPT_WRITEDATA, unmanaged.toOpaque()), "WRITEDATA")
            try check(CCurl_setoptHeaderFunction(h, writeHeader), "HEADERFUNCTION")
            try check(CCurl_setoptPointer(h, CURLOPT_HEADERDATA, unmanaged.toOpaque()), "HEADERDATA")
            if sink.onChunk != nil {
                // Called about once a second even when no byte arrives: how a cancelled watch stops.
                try check(CCurl_setoptLong(h, CURLOPT_NOPROGRESS, 0), "NOPROGRESS")
                try check(CCurl_setoptXferInfoFunction(h, progress), "XFERINFOFUNCTION")
                try check(CCurl_setoptPointer(h, CURLOPT_XFERINFODATA, unmanaged.toOpaque()), "XFERINFODATA")
            }
            try configureTLS(h, config)
            var headers = request.headers
            if let token = config.token { headers.append(("Authorization", "Bearer \(token)")) }
            // Without this, curl sends "Expect: 100-continue" for larger bodies and waits.
            headers.append(("Expect", ""))
            for (name, value) in headers {
                headerList = curl_slist_append(headerList, value.isEmpty ? "\(name):" : "\(name): \(value)")
            }
            try check(CCurl_setoptSlist(h, CURLOPT_HTTPHEADER, headerList), "HTTPHEADER")
            if let body = request.body {
                try check(CCurl_setoptLong(h, CURLOPT_POSTFIELDSIZE, body.count), "POSTFIELDSIZE")
                try body.withUnsafeBytes { raw in
                    // COPYPOSTFIELDS: curl keeps its own copy, so the buffer may go.
                    try check(CCurl_setoptPointer(h, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!)), "COPYPOSTFIELDS")
                }
            }
        } catch let error as TransportError {
            return .failure(error)
        } catch {
            return .failure(TransportError(code: -1, message: "\(error)"))
        }
        let rc = curl_easy_perform(h)
        if sink.cancelled.load(ordering: .relaxed) { return .failure(TransportError(code: 42, message: "cancelled")) }
        guard rc == CURLE_OK else {
            return .failure(TransportError(code: Int(rc.rawValue), message: String(cString: curl_easy_strerror(rc))))
        }
        var status = 0
        _ = CCurl_getinfoLong(h, CURLINFO_RESPONSE_CODE, &status)
        return .success(HTTPResponse(status: status, headers: sink.headers, body: sink.body))
    }

    private func configureTLS(_ h: UnsafeMutableRawPointer, _ config: Kubeconfig) throws {
        if config.insecureSkipTLSVerify {
            try check(CCurl_setoptLong(h, CURLOPT_SSL_VERIFYPEER, 0), "SSL_VERIFYPEER")
            try check(CCurl_setoptLong(h, CURLOPT_SSL_VERIFYHOST, 0), "SSL_VERIFYHOST")
        } else {
            try check(CCurl_setoptLong(h, CURLOPT_SSL_VERIFYPEER, 1), "SSL_VERIFYPEER")
            try check(CCurl_setoptLong(h, CURLOPT_SSL_VERIFYHOST, 2), "SSL_VERIFYHOST")
        }
        if let ca = config.caPEM {
            // Trust the cluster's CA only: without these, curl also loads the system bundle
            // (hundreds of public CAs, and 40 ms of parsing per new connection).
            try check(CCurl_setoptString(h, CURLOPT_CAINFO, nil), "CAINFO")
            try check(CCurl_setoptString(h, CURLOPT_CAPATH, nil), "CAPATH")
            try ca.withUnsafeBytes { try check(CCurl_setoptBlob(h, CURLOPT_CAINFO_BLOB, $0.baseAddress, $0.count), "CAINFO_BLOB") }
        }
        if let cert = config.clientCertificatePEM, let key = config.clientKeyPEM {
            try check(CCurl_setoptString(h, CURLOPT_SSLCERTTYPE, "PEM"), "SSLCERTTYPE")
            try check(CCurl_setoptString(h, CURLOPT_SSLKEYTYPE, "PEM"), "SSLKEYTYPE")
            try cert.withUnsafeBytes { try check(CCurl_setoptBlob(h, CURLOPT_SSLCERT_BLOB, $0.baseAddress, $0.count), "SSLCERT_BLOB") }
            try key.withUnsafeBytes { try check(CCurl_setoptBlob(h, CURLOPT_SSLKEY_BLOB, $0.baseAddress, $0.count), "SSLKEY_BLOB") }
        }
    }

    private func check(_ rc: CURLcode, _ what: String) throws {
        guard rc == CURLE_OK else {
            throw TransportError(code: Int(rc.rawValue), message: "setting \(what): \(String(cString: curl_easy_strerror(rc)))")
        }
    }
}

/// Collects one response; lives for one `perform`, on the worker thread only. With
/// `onChunk`, body bytes are handed on as they arrive instead (a watch).
final class ResponseSink: @unchecked Sendable {
    var body: [UInt8] = []
    var headers: [String: String] = [:]
    var status = 0
    var onChunk: (([UInt8]) -> Void)?
    let cancelled = Atomic<Bool>(false)
}

/// libcurl's write callback: the context comes through CURLOPT_WRITEDATA, as a C function
/// pointer cannot capture.
private let writeBody: CCurl_WriteCallback = { pointer, size, count, context in
    guard let pointer, let context else { return 0 }
    let sink = Unmanaged<ResponseSink>.fromOpaque(context).takeUnretainedValue()
    let n = size * count
    if sink.cancelled.load(ordering: .relaxed) { return 0 }
    let bytes = pointer.withMemoryRebound(to: UInt8.self, capacity: n) { Array(UnsafeBufferPointer(start: $0, count: n)) }
    if let onChunk = sink.onChunk, sink.status == 200 { onChunk(bytes) } else { sink.body += bytes }
    return n   // anything else makes curl abort with CURLE_WRITE_ERROR
}

private let progress: CCurl_XferInfoCallback = { context, _, _, _, _ in
    guard let context else { return 0 }
    return Unmanaged<ResponseSink>.fromOpaque(context).takeUnretainedValue().cancelled.load(ordering: .relaxed) ? 1 : 0
}

private let writeHeader: CCurl_WriteCallback = { pointer, size, count, context in
    guard let pointer, let context else { return 0 }
    let sink = Unmanaged<ResponseSink>.fromOpaque(context).takeUnretainedValue()
    let n = size * count
    let line = pointer.withMemoryRebound(to: UInt8.self, capacity: n) { String(decoding: UnsafeBufferPointer(start: $0, count: n), as: UTF8.self) }
    if line.hasPrefix("HTTP/") {
        sink.headers = [:]   // a new response (after a redirect or 100 Continue)
        // "HTTP/1.1 200 OK\r\n", or "HTTP/2 200\r\n" with no reason phrase.
        sink.status = Int(line.split(whereSeparator: { $0 == " " || $0 == "\r" || $0 == "\n" }).dropFirst().first ?? "") ?? 0
    } else if let colon = line.firstIndex(of: ":") {
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].trimmingCharacters(in: " \r\n\t")
        // Warning may come once per problem: keep them all, one per line.
        if name == "warning", let earlier = sink.headers[name] { sink.headers[name] = earlier + "\n" + value } else { sink.headers[name] = value }
    }
    return n
}

extension Substring {
    func trimmingCharacters(in set: String) -> String {
        String(drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}
