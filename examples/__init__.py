"""Sample data shipped with minerva-ai: the demo organization, settings files, deploy configs."""
