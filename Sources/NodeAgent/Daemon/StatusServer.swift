import Hummingbird
import Prometheus
import Reconcilers
import YAML

/// The HTTP API on the WireGuard address: /healthz, /readyz, /status, /metrics, POST /sync.
enum StatusServer {
    static func router(status: AgentStatus, metrics: AgentMetrics, loop: ReconcileLoop,
                       host: HostHeaderMiddleware<BasicRequestContext>? = nil) -> Router<BasicRequestContext> {
        let router = Router()
        if let host { router.add(middleware: host) }
        router.get("/healthz") { _, _ in text(.ok, "ok\n") }
        router.get("/readyz") { _, _ in
            await status.lastPassConverged ? text(.ok, "converged\n") : text(.serviceUnavailable, "not converged\n")
        }
        router.get("/status") { _, _ in
            let json = StatusRedaction.apply(await status.json, secrets: loop.secretValues())
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: json.jsonText + "\n")))
        }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition())))
        }
        router.post("/sync") { request, _ in
            // Read on every request: a rotated token works at once, the old one stops working.
            guard let token = loop.syncToken(), !token.isEmpty else { return text(.forbidden, "no tokenFile configured: POST /sync is disabled\n") }
            let presented = request.headers[.authorization].map { Array($0.utf8) } ?? []
            guard constantTimeEqual(presented, Array("Bearer ".utf8) + token) else { return text(.unauthorized, "unauthorized\n") }
            loop.sync()
            return text(.accepted, "sync requested\n")
        }
        return router
    }

    static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    /// Compares without an early exit, so the time taken says nothing about the token.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<max(a.count, b.count) {
            difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return difference == 0
    }
}
