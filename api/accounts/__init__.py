"""End users (admins, teachers, students): argon2id password hashes, the admin users API and `setu users`."""
