"""The central (head-office) server: takes events and corrections forwarded by lots,
exactly once, and serves tariffs and member lists to them."""
