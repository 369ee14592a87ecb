from django.shortcuts import redirect, render

from . import roles


def home(request):
    user_roles = roles.user_roles(request.user)
    if user_roles & set(roles.CAN_VIEW_CLINICAL):
        return redirect("annotation:case_list")
    if roles.READER in user_roles:
        try:
            return redirect("reports:my_studies")
        except Exception:  # reports pages not installed yet
            pass
    return render(request, "home.html")
