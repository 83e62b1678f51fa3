import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTPTypes
import Synchronization

/// Limits what HTTP clients can hold of the daemon: connections per peer address and in all,
/// and how long a request's head may take to arrive. Hummingbird's HTTP/1 server has neither
/// (an idle or trickling connection is kept for ever), so about a thousand idle connections
/// from one VPN peer, or a local user on `lo`, would take every descriptor the reconcilers
/// need to open files and start commands.
final class ConnectionGuard: Sendable {
    struct Limits: Sendable {
        /// Open connections one address may hold; more are closed at once.
        var perPeer = 16
        /// Open connections from loopback (127.0.0.0/8, ::1) in all: local users, whatever
        /// loopback addresses they use, cannot take the VPN peers' share of `total`.
        var loopbackTotal = 64
        /// Open connections in all: with `LimitNOFILE=65536` in the unit, thousands of
        /// descriptors stay for the reconcile loop whatever clients do.
        var total = 256
        /// From accepting a connection (or sending the previous response) to a complete
        /// request, head and body: a client trickling either is cut off.
        var requestTimeout = TimeAmount.seconds(10)
        /// A connection with nothing read for this long is closed.
        var idleTimeout = TimeAmount.seconds(30)
    }

    let limits: Limits
    private let counts = Mutex<(total: Int, loopback: Int, byPeer: [String: Int])>((0, 0, [:]))

    init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// A client address as counted: IPv4-mapped IPv6 as the IPv4 address it is.
    static func peerKey(_ address: String) -> String {
        address.hasPrefix("::ffff:") && address.contains(".") ? String(address.dropFirst(7)) : address
    }

    static func isLoopback(_ peer: String) -> Bool { peer == "::1" || peer.hasPrefix("127.") }

    /// Takes a slot for the peer, or nil when the peer, loopback's share or the server is full.
    func admit(_ peer: String) -> Bool {
        let loopback = Self.isLoopback(peer)
        return counts.withLock { c in
            guard c.total < limits.total, c.byPeer[peer, default: 0] < limits.perPeer, !loopback || c.loopback < limits.loopbackTotal else {
                return false
            }
            c.total += 1
            if loopback { c.loopback += 1 }
            c.byPeer[peer, default: 0] += 1
            return true
        }
    }

    func release(_ peer: String) {
        counts.withLock { c in
            c.total -= 1
            if Self.isLoopback(peer) { c.loopback -= 1 }
            let left = c.byPeer[peer, default: 1] - 1
            c.byPeer[peer] = left > 0 ? left : nil
        }
    }

    /// Open connections, in all and for one peer (tests, metrics).
    func open(peer: String? = nil) -> Int {
        counts.withLock { c in peer.map { c.byPeer[$0, default: 0] } ?? c.total }
    }

    /// The HTTP/1 server configuration with this guard in every connection's pipeline.
    var http1: HTTP1Channel.Configuration {
        HTTP1Channel.Configuration(additionalChannelHandlers: [Handler(guard: self)], idleTimeout: limits.idleTimeout)
    }

    /// Counts the connection while it is in the pipeline and closes it when it is over a limit
    /// or when a request does not arrive whole in time.
    final class Handler: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
        typealias InboundIn = HTTPRequestPart
        typealias InboundOut = HTTPRequestPart
        typealias OutboundIn = HTTPResponsePart
        typealias OutboundOut = HTTPResponsePart

        let owner: ConnectionGuard
        private var peer: String?
        private var deadline: Scheduled<Void>?

        init(guard owner: ConnectionGuard) {
            self.owner = owner
        }

        func handlerAdded(context: ChannelHandlerContext) {
            let address = ConnectionGuard.peerKey(context.channel.remoteAddress?.ipAddress ?? "unknown")
            guard owner.admit(address) else {
                context.close(promise: nil)
                return
            }
            peer = address
            armDeadline(context)
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            deadline?.cancel()
            if let peer { owner.release(peer) }
            peer = nil
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .end = unwrapInboundIn(data) {
                // The request is whole: the handler's time is not the client's.
                deadline?.cancel()
                deadline = nil
            }
            context.fireChannelRead(data)
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            if case .end = unwrapOutboundIn(data) {
                // The next request on a kept-alive connection has the same time to arrive.
                armDeadline(context)
            }
            context.write(data, promise: promise)
        }

        private func armDeadline(_ context: ChannelHandlerContext) {
            deadline?.cancel()
            let channel = context.channel
            deadline = context.eventLoop.scheduleTask(in: owner.limits.requestTimeout) { channel.close(promise: nil) }
        }
    }
}

/// Answers only requests addressed to the status server by the names it can rightly have: its
/// listen address and loopback. A browser on the VPN tricked by DNS rebinding sends its own
/// host name, and is refused.
struct HostHeaderMiddleware<Context: RequestContext>: RouterMiddleware {
    let allowed: Set<String>

    init(listen host: String, port: Int) {
        var names: Set<String> = []
        let bracketed = host.contains(":") ? "[\(host)]" : host
        for name in [bracketed, "localhost", "127.0.0.1", "[::1]"] {
            names.insert(name.lowercased())
            names.insert("\(name):\(port)".lowercased())
        }
        allowed = names
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // HTTP/1.0 clients may send none; what rebinding sends is always a foreign name.
        if let host = request.head.authority, !allowed.contains(host.lowercased()) {
            return StatusServer.text(.misdirectedRequest, "this server answers only for its own address\n")
        }
        return try await next(request, context)
    }
}
