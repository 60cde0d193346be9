-- otp_codes.attempts_since: when the current attempt window began, so a resend does not reset the budget.
ALTER TABLE otp_codes ADD COLUMN attempts_since timestamptz NOT NULL DEFAULT now();

COMMENT ON COLUMN otp_codes.attempts IS 'Failed tries since attempts_since; kept across resends within OTP_EXPIRY.';
