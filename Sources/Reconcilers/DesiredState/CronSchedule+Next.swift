extension CronSchedule {
    /// Whether the schedule fires on this UTC day (month, and the day-of-month / day-of-week rule).
    func matches(day: Int64) -> Bool {
        let (_, month, dayOfMonth) = Timestamp.civil(fromDays: day)
        guard months.contains(Int(month)) else { return false }
        let weekday = Int(((day % 7) + 11) % 7)   // 1970-01-01 was a Thursday (4)
        // Vixie cron: if either day field starts with `*` (`*` or `*/N`), both must match;
        // if both are restricted, either may.
        if anyDayOfMonth || anyDayOfWeek {
            return daysOfWeek.contains(weekday) && daysOfMonth.contains(Int(dayOfMonth))
        }
        return daysOfWeek.contains(weekday) || daysOfMonth.contains(Int(dayOfMonth))
    }

    /// The first time strictly after `t` the schedule fires (whole minutes, UTC); nil if it
    /// never does within eight years (such as `0 0 30 2 *`, which validation already refuses).
    public func next(after t: Timestamp) -> Timestamp? {
        let start = Self.floorDiv(t.millisecondsSinceEpoch, 60_000) + 1   // the next whole minute
        let firstDay = Self.floorDiv(start, 1440)
        let (hs, ms) = (hours.sorted(), minutes.sorted())
        for day in firstDay..<(firstDay + 366 * 8) where matches(day: day) {
            for h in hs {
                for m in ms {
                    let minute = day * 1440 + Int64(h * 60 + m)
                    if minute >= start { return Timestamp(millisecondsSinceEpoch: minute * 60_000) }
                }
            }
        }
        return nil
    }

    /// The last time at or before `t` the schedule fired: what a node that was down then
    /// has missed.
    public func previous(atOrBefore t: Timestamp) -> Timestamp? {
        let end = Self.floorDiv(t.millisecondsSinceEpoch, 60_000)
        let lastDay = Self.floorDiv(end, 1440)
        let (hs, ms) = (hours.sorted(by: >), minutes.sorted(by: >))
        for day in stride(from: lastDay, to: lastDay - 366 * 8, by: -1) where matches(day: day) {
            for h in hs {
                for m in ms {
                    let minute = day * 1440 + Int64(h * 60 + m)
                    if minute <= end { return Timestamp(millisecondsSinceEpoch: minute * 60_000) }
                }
            }
        }
        return nil
    }

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : (a - b + 1) / b }
}
