#!/usr/bin/env python3
"""Times the PATE privacy math in Python (NumPy/SciPy) on the same votes as
`cargo bench -p pate-privacy --bench analyze`, for comparison.

This is our own small port, written for timing only: it follows the
algorithms of the reference analysis (tensorflow/privacy research/pate_2017
and research/pate_2018) and makes the same kind of NumPy/SciPy calls per
query (scipy.stats.norm.logsf, scipy.special.erfc/erfcinv, NumPy vectors
over the orders), so its cost is representative of the reference's. It is
not the reference code. It prints epsilons so they can be checked against
the Rust benchmark's.

Usage:
    PATE_BENCH_VOTES_CSV=/tmp/votes.csv cargo bench -p pate-privacy --bench analyze
    python3 privacy/benches/reference_timing.py /tmp/votes.csv [--queries N] [--slow-queries M]

The fast cases (RDP accounting, moments without smoothed sensitivity) run on
N queries (default: all); the slow ones (2017 smoothed sensitivity and the
smooth-sensitivity release) on the first M (default 200) and the per-query
time is extrapolated.
"""

import argparse
import math
import time

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

DELTA = 1e-5


def default_orders():
    return np.concatenate((np.arange(2, 100 + 1, 0.5), np.logspace(np.log10(100), np.log10(500), num=100)))


def lse(x):
    m = max(x)
    return m + math.log(sum(np.exp(x - m)))


def log1mexp(x):
    if x < -1:
        return math.log1p(-math.exp(x))
    if x < 0:
        return math.log(-math.expm1(x))
    return -np.inf


def eps_from_rdp(orders, rdp, delta=DELTA):
    eps = np.array(rdp) - math.log(delta) / (np.array(orders) - 1)
    i = int(np.argmin(eps))
    return eps[i], orders[i]


# --- LNMax, RDP (2018) ---------------------------------------------------
def logq_laplace(counts, lam):
    top = int(np.argmax(counts))
    x = (counts - counts[top]) / lam
    rest = np.delete(x, top)
    return min(lse(np.log(2 - rest) + math.log(0.25) + rest), math.log(1 - 1 / len(counts)))


def rdp_pure(logq, e, orders):
    q = math.exp(logq)
    log_t = np.full_like(orders, np.inf)
    if q <= 1 / (math.exp(e) + 1):
        a = math.log1p(-q)
        log_t = np.logaddexp(a + (a - log1mexp(e + logq)) * (orders - 1), logq + e * (orders - 1))
    return np.minimum(np.minimum(0.5 * e * e * orders, log_t / (orders - 1)), e)


# --- LNMax, moments (2017) ---------------------------------------------
def q_noisy_max(counts, g):
    top = int(np.argmax(counts))
    c = g * (np.asarray(counts) - counts[top])
    q = 0.0
    for i, x in enumerate(c):
        if i != top:
            q += (2.0 - x) / (4.0 * math.exp(-x))
    return min(q, 1.0 - 1.0 / len(counts))


def logmgf(q, e, l):
    if q < 0.5:
        t = (1 - q) * math.pow((1 - q) / (1 - math.exp(e) * q), l) + q * math.exp(e * l)
        log_t = math.log(t) if t > 0 else e * l
    else:
        log_t = e * l
    return min(0.5 * e * e * l * (l + 1), log_t, e * l)


def smoothed(counts, g, l, beta):
    def sens(k):
        if 0.5 * g * l > 1 or counts[0] < counts[1] + k:
            return 0.0
        s = sorted(counts, reverse=True)
        s[0] -= k
        s[1] += k
        v = logmgf(q_noisy_max(s, g), 2 * g, l)
        s[0] -= 1
        s[1] += 1
        return logmgf(q_noisy_max(s, g), 2 * g, l) - v

    k, ss = 0, sens(0)
    while k < max(counts):
        k += 1
        s = sens(k)
        ss = max(ss, math.exp(-beta * k) * s)
        if s == 0.0:
            break
    return ss


# --- GNMax and the threshold (2018) ------------------------------------
def logq_gauss(counts, sigma):
    top = int(np.argmax(counts))
    rest = np.delete(counts[top] - counts, top)
    return min(lse(scipy.stats.norm.logsf(rest, scale=math.sqrt(2 * sigma**2))), math.log(1 - 1 / len(counts)))


def rdp_gauss(logq, sigma, orders):
    orders = np.atleast_1d(orders).astype(float)
    var = sigma**2
    ret = orders / var
    if np.isneginf(logq):
        return np.zeros_like(ret)
    mu2 = math.sqrt(var * -logq)
    mu1 = mu2 + 1
    mask = np.logical_and(mu1 > orders, mu2 > 1)
    r1, r2 = mu1 / var, mu2 / var
    if (
        np.any(mask)
        and logq <= (mu2 - 1) * r2 - mu2 * (math.log(1 + 1 / (mu1 - 1)) + math.log(1 + 1 / (mu2 - 1)))
        and -logq > r2
    ):
        l1q = log1mexp(logq)
        la = (orders - 1) * (l1q - log1mexp((logq + r2) * (1 - 1 / mu2)))
        lb = (orders - 1) * (r1 - logq / (mu1 - 1))
        ls = np.logaddexp(l1q + la, logq + lb)
        ret[mask] = np.minimum(ret, ls / (orders - 1))[mask]
    return ret


def logpr_answered(t, sigma, counts):
    return scipy.stats.norm.logsf(t - round(max(counts)), scale=sigma)


def rdp_threshold(lpa, sigma, orders):
    return rdp_gauss(min(lpa, log1mexp(lpa)), 2**0.5 * sigma, orders)


# --- smooth sensitivity of GNMax and the threshold ---------------------
class GnSS:
    def __init__(self, sigma, order, m):
        self.sigma, self.order, self.m = sigma, order, m
        ind = order / sigma**2
        f = lambda lq: self.dep(lq) - ind
        ub = min(-((1 + 1 / sigma) ** 2), -(((order - 0.99) / sigma) ** 2), -1 / sigma**2)
        if f(ub) < 0:
            self.lq0 = ub
        else:
            lb = 2 * ub
            while f(lb) > 0:
                lb *= 1.5
            self.lq0 = scipy.optimize.brentq(f, lb, ub)
        self.lq1 = math.log(self.bl(math.exp(self.lq0)))

    def dep(self, lq):
        s, o = self.sigma, self.order
        mu2 = s * math.sqrt(-lq)
        mu1 = mu2 + 1
        l1q = np.log1p(-math.exp(lq))
        la = (o - 1) * (l1q - np.log1p(-math.exp((lq + mu2 / s**2) * (1 - 1 / mu2))))
        lb = (o - 1) * (mu1 / s**2 - lq / (mu1 - 1))
        return np.logaddexp(l1q + la, lq + lb) / (o - 1)

    def rdp(self, lq):
        return self.order / self.sigma**2 if lq >= self.lq0 else self.dep(lq)

    def bl(self, q):
        return (self.m - 1) / 2 * scipy.special.erfc(1 / self.sigma + scipy.special.erfcinv(2 * q / (self.m - 1)))

    def bu(self, q):
        return min(1, (self.m - 1) / 2 * scipy.special.erfc(-1 / self.sigma + scipy.special.erfcinv(2 * q / (self.m - 1))))

    def ls(self, lq):
        if self.lq1 <= lq <= self.lq0:
            lq = self.lq1
        b = self.rdp(lq)
        return max(self.rdp(math.log(self.bu(math.exp(lq)))) - b, b - self.rdp(math.log(self.bl(math.exp(lq)))))

    def bounds(self, votes, n):
        lq = logq_gauss(votes, self.sigma)
        res = np.full(n, self.ls(self.lq1))
        if self.lq1 <= lq <= self.lq0:
            return res
        v = sorted(votes, reverse=True)
        res[0] = self.ls(lq)
        d, left = 0, lq > self.lq0
        while (left and lq > self.lq0 and v[1] > 0) or (not left and lq < self.lq1):
            d += 1
            if left:
                v[0] += 1
                v[1] -= 1
                i = 1
                while i < len(v) - 1 and v[i] < v[i + 1]:
                    v[i], v[i + 1] = v[i + 1], v[i]
                    i += 1
            else:
                v[0] -= 1
                v[1] += 1
            lq = logq_gauss(np.array(v), self.sigma)
            res[d] = self.ls(lq)
        return res


def ss_release(votes, n_teachers, sigma2, order, threshold=None, sigma1=None):
    """Step 1 taken as data-independent (as the Table-2 runs find for
    T=200, sigma1=150): expected RDP and local sensitivities, beta search."""
    g = GnSS(sigma2, order, votes.shape[1])
    rdp_cum, ls_cum = 0.0, np.zeros(n_teachers)
    for v in votes:
        p = 1.0 if threshold is None else math.exp(logpr_answered(threshold, sigma1, v))
        rdp1 = 0.0 if threshold is None else order / (2 * sigma1**2)
        rdp_cum += rdp1 + p * rdp_gauss(logq_gauss(v, sigma2), sigma2, order)[0]
        ls_cum += p * g.bounds(v, n_teachers)
    best = (np.inf, None)
    for beta in np.arange(0.3 / order, 0.495 / order, 0.01 / order):
        ss = max(ls_cum * np.exp(-beta * np.arange(n_teachers)))
        s = ((order * math.exp(2 * beta)) / ss) ** (1 / 3)
        cost = rdp_cum + order * math.exp(2 * beta) / s**2 + (-0.5 * math.log(1 - 2 * order * beta) + beta * order) / (order - 1) + 2 * ss * s
        if cost < best[0]:
            best = (cost, beta)
    return best


def timed(name, n, fn):
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    print(f"{name:<56} {n:>7} {dt * 1e3:>12.1f} {dt * 1e6 / n:>12.1f}  {out}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("votes")
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--slow-queries", type=int, default=200)
    a = ap.parse_args()
    votes = np.loadtxt(a.votes, delimiter=",", dtype=float)
    fast = votes[: a.queries] if a.queries else votes
    slow = votes[: a.slow_queries]
    orders = default_orders()
    n_teachers = int(votes.sum(axis=1).max())
    print(f"python {'.'.join(map(str, __import__('sys').version_info[:3]))}, numpy {np.__version__}, scipy {scipy.__version__}")
    print(f"{'case':<56} {'queries':>7} {'total ms':>12} {'us/query':>12}  result")

    def lnmax_rdp(vs):
        tot = np.zeros(len(orders))
        for v in vs:
            tot += rdp_pure(logq_laplace(v, 20.0), 0.1, orders)
        return eps_from_rdp(orders, tot)

    def moments(vs, with_ss):
        ls = 1.0 + np.arange(8)
        tot, tss = np.zeros(8), np.zeros(8)
        for v in vs:
            tot += np.array([logmgf(q_noisy_max(v, 0.05), 0.1, l) for l in ls])
            if with_ss:
                tss += np.array([smoothed(list(v), 0.05, l, 0.09) for l in ls])
        return min((tot - math.log(DELTA)) / ls)

    def gnmax(vs):
        tot = np.zeros(len(orders))
        for v in vs:
            tot += rdp_gauss(logq_gauss(v, 40.0), 40.0, orders)
        return eps_from_rdp(orders, tot)

    def confident(vs):
        tot = np.zeros(len(orders))
        for v in vs:
            lpa = logpr_answered(200.0, 150.0, v)
            tot += rdp_threshold(lpa, 150.0, orders) + math.exp(lpa) * rdp_gauss(logq_gauss(v, 40.0), 40.0, orders)
        return eps_from_rdp(orders, tot)

    timed("lnmax rdp (b=20)", len(fast), lambda: lnmax_rdp(fast))
    timed("lnmax moments2017 (b=20), no smoothed sens", len(fast), lambda: moments(fast, False))
    timed("lnmax moments2017 (b=20) + smoothed sens", len(slow), lambda: moments(slow, True))
    timed("gnmax rdp (sigma=40)", len(fast), lambda: gnmax(fast))
    timed("confident-gnmax rdp (200/150/40)", len(fast), lambda: confident(fast))
    # The release is searched at the order that minimises each mechanism's
    # expected epsilon on the same queries (found here, not timed).
    _, o_gn = gnmax(slow)
    _, o_cf = confident(slow)
    timed(f"gnmax smooth-sens release only (order {o_gn})", len(slow), lambda: ss_release(slow, n_teachers, 40.0, o_gn))
    timed(
        f"confident-gnmax smooth-sens release only (order {o_cf})",
        len(slow),
        lambda: ss_release(slow, n_teachers, 40.0, o_cf, 200.0, 150.0),
    )


if __name__ == "__main__":
    main()
