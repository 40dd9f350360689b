"""Argo Workflows: the stage graph compiled into a WorkflowTemplate, what pods report back, submit and status."""
