extension JSONValue {
    /// The value at a key path (`["metadata", "name"]`); setting nil removes it, setting a
    /// value creates the objects on the way.
    public subscript(path: [String]) -> JSONValue? {
        get {
            var current: JSONValue? = self
            for key in path { current = current?[key] }
            return current
        }
        set {
            guard let first = path.first else {
                if let newValue { self = newValue }
                return
            }
            var members = self.members ?? []
            let index = members.firstIndex { $0.key == first }
            var child = index.map { members[$0].value } ?? .object([])
            if path.count == 1 {
                guard let newValue else {
                    if let index { members.remove(at: index) }
                    self = .object(members)
                    return
                }
                child = newValue
            } else {
                child[Array(path.dropFirst())] = newValue
            }
            if let index { members[index].value = child } else { members.append(Member(first, child)) }
            self = .object(members)
        }
    }

    /// Every path to a leaf (a scalar, a list, or an empty map), as server-side apply owns them.
    public var leafPaths: [[String]] {
        guard case .object(let members) = self, !members.isEmpty else { return [[]] }
        return members.flatMap { m in m.value.leafPaths.map { [m.key] + $0 } }
    }

    /// `patch` merged over `self`: maps merge key by key, anything else is replaced whole.
    public func merging(_ patch: JSONValue) -> JSONValue {
        guard case .object(let base) = self, case .object(let over) = patch else { return patch }
        var out = base
        for m in over {
            if let i = out.firstIndex(where: { $0.key == m.key }) {
                out[i].value = out[i].value.merging(m.value)
            } else {
                out.append(m)
            }
        }
        return .object(out)
    }
}
