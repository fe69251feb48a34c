"""The API's token endpoints: obtain and refresh JWTs, with revocation that holds.

Refresh tokens rotate (each use returns a new one and blacklists the old one). Every token
carries a digest of its user's password hash (simplejwt's `CHECK_REVOKE_TOKEN`), so a
password change revokes every token issued before it; a deactivated user's tokens fail
their next check, and a deleted user's refresh token is a 401 like any invalid token.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.serializers import TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import get_md5_hash_password
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from flagsite.throttling import lockout_response

REVOKED = "the token was revoked: its user changed their password, or left"


class RevocableRefreshSerializer(TokenRefreshSerializer):
    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        refresh = RefreshToken(attrs["refresh"])  # signature, expiry, blacklist
        user_id = refresh.payload.get(api_settings.USER_ID_CLAIM)
        user = (
            get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first()
            if user_id
            else None
        )
        if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
            raise AuthenticationFailed(REVOKED, "token_revoked")
        claim = refresh.payload.get(api_settings.REVOKE_TOKEN_CLAIM)
        if claim != get_md5_hash_password(user.password):
            raise AuthenticationFailed(REVOKED, "token_revoked")
        return super().validate(attrs)


class TokenView(TokenObtainPairView):
    """POST username and password: an access and a refresh token.

    django-axes marks a locked-out attempt on the request DRF hands to `authenticate` (its
    own Request, not Django's), so the lockout answer is given here: 429 JSON, Retry-After.
    """

    def finalize_response(self, request, response, *args, **kwargs):
        if getattr(request, "axes_locked_out", False):
            response = lockout_response(request._request)
        return super().finalize_response(request, response, *args, **kwargs)


class RefreshView(TokenRefreshView):
    """POST a refresh token: a new access token and a new refresh token (the old one dies)."""

    serializer_class = RevocableRefreshSerializer
