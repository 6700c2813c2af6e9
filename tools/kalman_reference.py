#!/usr/bin/env python3
"""The reference numbers of `tests/suite/tracking.rs`: ByteTrack's KalmanFilter (xyah,
std_weight_position 1/20, std_weight_velocity 1/160), written out from its numpy/scipy
formulas, on a fixed measurement sequence."""
import numpy as np
import scipy.linalg

F = np.eye(8)
for i in range(4):
    F[i, 4 + i] = 1.0
H = np.eye(4, 8)
WP, WV = 1 / 20, 1 / 160


def initiate(m):
    h = m[3]
    std = [2 * WP * h, 2 * WP * h, 1e-2, 2 * WP * h, 10 * WV * h, 10 * WV * h, 1e-5, 10 * WV * h]
    return np.r_[m, np.zeros(4)], np.diag(np.square(std))


def predict(mean, cov):
    h = mean[3]
    q = np.diag(np.square([WP * h, WP * h, 1e-2, WP * h, WV * h, WV * h, 1e-5, WV * h]))
    return mean @ F.T, np.linalg.multi_dot((F, cov, F.T)) + q


def update(mean, cov, z):
    h = mean[3]
    s = np.linalg.multi_dot((H, cov, H.T)) + np.diag(np.square([WP * h, WP * h, 1e-1, WP * h]))
    c, lower = scipy.linalg.cho_factor(s, lower=True, check_finite=False)
    k = scipy.linalg.cho_solve((c, lower), (cov @ H.T).T, check_finite=False).T
    return mean + (z - H @ mean) @ k.T, cov - np.linalg.multi_dot((k, s, k.T))


m, p = initiate(np.array([100.0, 50.0, 0.5, 80.0]))
for z in ([104.0, 52.0, 0.52, 82.0], [109.0, 55.0, 0.51, 83.0]):
    m, p = predict(m, p)
    m, p = update(m, p, np.array(z))
np.set_printoptions(precision=17, floatmode='unique')
print("mean", [repr(float(v)) for v in m])
print('cov[0]', repr(p[0]))
print('cov[4]', repr(p[4]))
print('cov[3][3], cov[7][7], cov[2][6]', repr(p[3, 3]), repr(p[7, 7]), repr(p[2, 6]))
